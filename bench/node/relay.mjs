// The floor to compare with (bench/loadgen.py --server node-relay): a plain Node
// `ws` relay that does only what the steady scenario needs. It answers auth and
// join-session, and forwards each ice-candidate to its `to` with `from` set. It
// has no validation, limits, metrics or logs, so it shows what the kernel and a
// minimal event loop cost per message on this machine.
//
//   node relay.mjs <port>        (prints "listening" once it accepts connections)
import { WebSocketServer } from "ws";

const port = Number(process.argv[2]);
const users = new Map();
const server = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
server.on("connection", (ws) => {
  let userId = null;
  ws.on("message", (raw) => {
    const frame = JSON.parse(raw);
    if (frame.type === "auth") {
      userId = String(frame.userId);
      users.set(userId, ws);
      ws.send(JSON.stringify({ type: "welcome", userId, connectionId: userId, iceServers: [] }));
    } else if (frame.type === "join-session") {
      ws.send(JSON.stringify({ type: "session-joined", sessionId: frame.sessionId, participants: [], replyTo: frame.id }));
    } else if (frame.type === "ice-candidate") {
      const target = users.get(frame.to);
      if (target) target.send(JSON.stringify({ ...frame, from: userId }));
    }
  });
  ws.on("close", () => {
    if (userId !== null && users.get(userId) === ws) users.delete(userId);
  });
});
server.on("listening", () => process.stdout.write("listening\n"));
