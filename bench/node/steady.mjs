// The realistic load shape for bench/loadgen.py (--client node): many connections,
// each sending a little. N pairs of connections join a session each; every
// connection sends an ice-candidate to its partner at its own paced moments (its
// own phase, rate R/(2N)), each frame its own WebSocket message and its own write.
//
//   node steady.mjs <ws url[,second node's url]> <pairs> <total rate/s> <duration s> <candidate json>
// With two URLs, each pair's second connection goes to the second node.
//
// Prints "ready" once every connection has joined, waits for a line on stdin,
// runs for the duration (then up to 5 s for frames in flight), and prints one
// JSON line: sent, received, latency percentiles (from each frame's *scheduled*
// send time, carried in data.t, which the server relays as sent), the worst
// 100 ms windows (stalls), and this process's own CPU time, so a saturated generator is never mistaken for a slow
// server. Every loop is bounded by the duration; traffic goes to the given URL only.
import { WebSocket } from "ws";
import readline from "node:readline";

const [urlsArg, pairsArg, rateArg, durationArg, candidateArg] = process.argv.slice(2);
const urls = urlsArg.split(",");
const pairs = Number(pairsArg);
const rate = Number(rateArg);
const duration = Number(durationArg) * 1000;
const candidate = JSON.parse(candidateArg);
const perConnection = rate / (2 * pairs); // frames per second per connection
const latencies = [];
let sent = 0;
let received = 0;
let errors = 0;
let measuring = false;
let started = 0;
// The first second is sent and counted but its latencies are not: at "go" this
// process's own send path is still being compiled, which delays the first
// frames by tens of ms against any server (the plain Node relay too).
const WARMUP_MS = 1000;
const STALL_MS = 10; // a 100 ms window whose worst latency is over this is reported
const windows = new Map(); // 100 ms window of the scheduled send time -> worst latency

function open(userId, sessionId, url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, "signaling.v1.json", { perMessageDeflate: false });
    ws.on("error", reject);
    ws.on("open", () => {
      ws.send(JSON.stringify({ type: "auth", userId }));
      ws.send(JSON.stringify({ type: "join-session", sessionId, id: "j" }));
    });
    ws.on("message", (raw) => {
      const frame = JSON.parse(raw);
      if (frame.type === "session-joined") resolve(ws);
      else if (frame.type === "ice-candidate") {
        received += 1;
        if (measuring && frame.data.t >= started + WARMUP_MS) {
          const latency = performance.now() - frame.data.t;
          latencies.push(latency);
          const window = Math.floor((frame.data.t - started) / 100);
          if (!(windows.get(window) >= latency)) windows.set(window, latency);
        }
      } else if (frame.type === "error") errors += 1;
    });
  });
}

const connections = [];
for (let start = 0; start < pairs; start += 100) {
  // open in batches so the server's accept queue is not the thing measured
  const batch = [];
  for (let i = start; i < Math.min(pairs, start + 100); i += 1) {
    batch.push(
      Promise.all([
        open(`p${i}a`, `s${i}`, urls[0]),
        open(`p${i}b`, `s${i}`, urls[urls.length - 1]),
      ]).then(([a, b]) => {
        connections.push({ ws: a, to: `p${i}b`, session: `s${i}` });
        connections.push({ ws: b, to: `p${i}a`, session: `s${i}` });
      }),
    );
  }
  await Promise.all(batch);
}
process.stdout.write("ready\n");
await new Promise((resolve) => readline.createInterface({ input: process.stdin }).once("line", resolve));

const cpuBefore = process.cpuUsage();
started = performance.now();
const end = started + duration;
const interval = 1000 / perConnection;
measuring = true;

function schedule(connection, due) {
  if (due >= end) return;
  setTimeout(() => {
    // one frame, one message, one write; t is when it was due, not when it went
    connection.ws.send(
      JSON.stringify({
        type: "ice-candidate",
        to: connection.to,
        sessionId: connection.session,
        data: { candidate, t: due },
      }),
    );
    sent += 1;
    schedule(connection, due + interval);
  }, Math.max(0, due - performance.now()));
}
for (const connection of connections) schedule(connection, started + Math.random() * interval);

await new Promise((resolve) => setTimeout(resolve, duration));
const drainUntil = performance.now() + 5000;
while (received < sent && performance.now() < drainUntil) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const cpu = process.cpuUsage(cpuBefore);
const wall = performance.now() - started;
latencies.sort((a, b) => a - b);
const pick = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : null);
process.stdout.write(
  JSON.stringify({
    sent,
    received,
    errors,
    p50_ms: pick(0.5),
    p99_ms: pick(0.99),
    max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    generator_cpu_percent: (100 * (cpu.user + cpu.system)) / 1000 / wall,
    // where the tail comes from: [seconds into the run, worst ms] of the slowest
    // 100 ms windows over STALL_MS, in time order (at most 20)
    stalls: [...windows]
      .filter(([, worst]) => worst > STALL_MS)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 20)
      .sort((a, b) => a[0] - b[0])
      .map(([window, worst]) => [window / 10, Math.round(worst)]),
  }) + "\n",
);
for (const { ws } of connections) ws.terminate();
process.exit(0);
