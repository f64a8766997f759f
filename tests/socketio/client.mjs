// A scriptable socket.io-client for the tests: commands on stdin, events on stdout (JSON lines).
//   node client.mjs <url> <userId> [sessionId] [websocket|default]
import { io } from "socket.io-client";
import readline from "node:readline";

const [url, userId, sessionId, transports] = process.argv.slice(2);
const options = { auth: { userId, sessionId: sessionId || undefined }, reconnectionDelay: 100,
                  reconnectionDelayMax: 500 };
if (transports === "websocket") options.transports = ["websocket"];
const socket = io(url, options);
const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");

socket.on("connect", () => out({ event: "connect", transport: socket.io.engine.transport.name }));
socket.io.on("open", () => {
  out({ event: "open", transport: socket.io.engine.transport.name });
  socket.io.engine.on("upgrade", (t) => out({ event: "upgrade", transport: t.name }));
});
socket.on("connect_error", (error) => out({ event: "connect_error", message: error.message }));
socket.on("disconnect", (reason) => out({ event: "disconnect", reason }));
socket.onAny((event, ...args) => out({ event, args }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.close) { socket.close(); setTimeout(() => process.exit(0), 50); return; }
  if (command.ack) {
    socket.emit(command.emit, command.payload, (...args) => out({ ack: command.emit, args }));
  } else {
    socket.emit(command.emit, command.payload);
  }
});
