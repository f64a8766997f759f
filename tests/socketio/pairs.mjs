// N pairs of socket.io-clients with the default transports (polling, then upgrade):
// in each pair, b offers to a and a answers, with the old server's payloads.
//   node pairs.mjs <url> <pairs> [spread]   -> one JSON line: {ok, failures, upgraded}
// With "spread", each client connects from its own loopback address (127.0.0.10,
// 127.0.0.11, ...), as clients behind a load balancer come from many addresses.
import http from "node:http";
import https from "node:https";
import { io } from "socket.io-client";

const [url, count, spread] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const failures = [];
const stages = new Map(); // pair -> where it is, to say where a stuck pair stopped
let upgraded = 0;
let clients = 0;

function client(userId, sessionId) {
  const options = { auth: { userId, sessionId }, reconnection: false, forceNew: true };
  if (spread === "spread") {
    const localAddress = `127.0.0.${10 + clients}`;
    const Agent = url.startsWith("https") ? https.Agent : http.Agent;
    Object.assign(options, { localAddress, agent: new Agent({ localAddress }) });
  }
  clients += 1;
  const socket = io(url, options);
  socket.on("connect", () => socket.emit("join-session", { sessionId }));
  socket.io.on("open", () => socket.io.engine.on("upgrade", () => { upgraded += 1; }));
  socket.on("connect_error", (e) => failures.push(`${userId}: connect_error ${e.message}`));
  socket.on("disconnect", (reason) => {
    if (reason !== "io client disconnect") failures.push(`${userId}: disconnect ${reason}`);
  });
  socket.on("error", (e) => failures.push(`${userId}: error ${JSON.stringify(e)}`));
  return socket;
}

const wait = (socket, event) => new Promise((resolve) => socket.once(event, resolve));

async function pair(n) {
  const sessionId = `pairs-${n}`;
  stages.set(n, "a connecting");
  const a = client(`a${n}`, sessionId);
  await wait(a, "connect");
  const joined = wait(a, "user-joined");
  stages.set(n, "b connecting");
  const b = client(`b${n}`, sessionId);
  await wait(b, "connect");
  stages.set(n, "a waiting for user-joined");
  await joined;
  stages.set(n, "a waiting for the offer");
  const offered = wait(a, "signal:offer");
  b.emit("signal:offer", { type: "offer", to: `a${n}`, sessionId, data: { sdp: { type: "offer", sdp: `v=0 ${n}` } } });
  const offer = await offered;
  stages.set(n, "b waiting for the answer");
  const answered = wait(b, "signal:answer");
  a.emit("signal:answer", { type: "answer", to: offer.from, sessionId, data: { sdp: { type: "answer", sdp: `v=0 ${n}` } } });
  const answer = await answered;
  // stay until both have upgraded (or given up on it), as a real call would
  await new Promise((resolve) => setTimeout(resolve, 300));
  const ok = offer.data.sdp.sdp === `v=0 ${n}` && answer.from === `a${n}` && a.connected && b.connected;
  a.close();
  b.close();
  stages.delete(n);
  return ok;
}

const timer = setTimeout(() => {
  const stuck = [...stages].map(([n, stage]) => `pair ${n}: ${stage}`);
  process.stdout.write(JSON.stringify({ ok: -1, failures: ["timed out", ...stuck, ...failures], upgraded }) + "\n");
  process.exit(1);
}, 30000);
const results = await Promise.all(Array.from({ length: count }, (_, n) => pair(n).catch((e) => {
  failures.push(String(e));
  return false;
})));
clearTimeout(timer);
process.stdout.write(JSON.stringify({ ok: results.filter(Boolean).length, failures, upgraded }) + "\n");
process.exit(0);
