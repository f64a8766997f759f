// The old server's README client snippets, verbatim, under the real socket.io-client.
//   node old-readme.mjs <server url> <caller|callee> <fixture.json>
// The snippets below are copied character for character from the old server's README
// ("Connection Flow" and "Server → Client"). Around them is only what a browser app
// would provide: a peerConnection (here a stand-in replaying a real Chromium call from
// the fixture, with RTCIceCandidate-like objects that serialise through toJSON), the
// variables the snippets name (receiverId, sessionId, otherUserId), and `io` pointed at
// the test server instead of http://localhost:3001. The callee is a second user, so its
// copy of the connect snippet has 'user_123' replaced by 'user_456' — the only edit.
// Everything the client sees is printed as JSON lines on stdout.
import { io as realIo } from "socket.io-client";
import { readFileSync } from "node:fs";
import readline from "node:readline";

const [serverUrl, role, fixturePath] = process.argv.slice(2);
const call = JSON.parse(readFileSync(fixturePath, "utf8"));
const out = (event, value) => process.stdout.write(JSON.stringify({ event, value }) + "\n");

const SNIPPETS = {
  connect: `const socket = io('http://localhost:3001', {
  auth: {
    userId: 'user_123',
    sessionId: 'session_456',
    // token: 'firebase_id_token' // TODO: Add in production
  }
});`,
  join: `socket.emit('join-session', { sessionId: 'session_456' });`,
  offer: `const offer = await peerConnection.createOffer();
await peerConnection.setLocalDescription(offer);

socket.emit('signal:offer', {
  type: 'offer',
  to: receiverId,
  sessionId: sessionId,
  data: { sdp: offer }
});`,
  answer: `socket.on('signal:offer', async (message) => {
  await peerConnection.setRemoteDescription(message.data.sdp);
  const answer = await peerConnection.createAnswer();
  await peerConnection.setLocalDescription(answer);
  
  socket.emit('signal:answer', {
    type: 'answer',
    to: message.from,
    sessionId: sessionId,
    data: { sdp: answer }
  });
});`,
  ice: `peerConnection.onicecandidate = (event) => {
  if (event.candidate) {
    socket.emit('signal:ice-candidate', {
      type: 'ice-candidate',
      to: otherUserId,
      sessionId: sessionId,
      data: { candidate: event.candidate }
    });
  }
};`,
  userJoined: `socket.on('user-joined', (data) => {
  console.log(\`User \${data.userId} joined\`);
});`,
  userLeft: `socket.on('user-left', (data) => {
  console.log(\`User \${data.userId} left\`);
});`,
};

/** What RTCIceCandidate gives JSON.stringify: its toJSON(), an RTCIceCandidateInit. */
class IceCandidateLike {
  constructor(init) { this.init = init; }
  toJSON() { return this.init; }
}

/** A peerConnection replaying the fixture's real Chromium offer/answer and candidates. */
class ReplayPeerConnection {
  constructor() { this.onicecandidate = null; }
  async createOffer() { return call.offer; }
  async createAnswer() { return call.answer; }
  async setLocalDescription(description) {
    const candidates = description.type === "offer" ? call.offerCandidates : call.answerCandidates;
    setTimeout(() => {
      for (const init of candidates) {
        this.onicecandidate?.({ candidate: init === null ? null : new IceCandidateLike(init) });
      }
    }, 0);
  }
  async setRemoteDescription(description) { out("remote-description", description); }
}

const me = role === "caller" ? "user_123" : "user_456";
const other = role === "caller" ? "user_456" : "user_123";
const scope = {
  io: (_url, options) => realIo(serverUrl, { ...options, reconnection: false }),
  peerConnection: new ReplayPeerConnection(),
  receiverId: other,
  otherUserId: other,
  sessionId: "session_456",
  console: { log: (line) => out("log", line) },
};
const names = Object.keys(scope);
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const run = (parts) =>
  new AsyncFunction(...names, `${parts.join("\n")}\nreturn socket;`)(...names.map((n) => scope[n]));

const connect = role === "caller" ? SNIPPETS.connect : SNIPPETS.connect.replace("'user_123'", `'${me}'`);
// One script, as an app would write it: connect, handlers, join; the caller then offers.
const socket = await run([
  connect,
  SNIPPETS.userJoined,
  SNIPPETS.userLeft,
  SNIPPETS.ice,
  role === "callee" ? SNIPPETS.answer : "",
  SNIPPETS.join,
]);
// the test's own listeners: what arrives, and whether the server refused anything
socket.on("connect", () => out("connect", socket.io.engine.transport.name));
socket.on("connect_error", (error) => out("connect_error", error.message));
socket.on("error", (error) => out("error", error));
socket.on("signal:answer", (message) => {
  out("answer", message);
  scope.peerConnection.setRemoteDescription(message.data.sdp);
});
socket.on("signal:offer", (message) => out("offer", message));
socket.on("signal:ice-candidate", (message) => out("candidate", message));

// commands from the test, one JSON object a line: {"offer": true} or {"close": true}
readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const command = JSON.parse(line);
  if (command.offer) {
    await new AsyncFunction(...names, "socket", SNIPPETS.offer)(
      ...names.map((n) => scope[n]),
      socket,
    );
    out("offered", true);
  } else if (command.close) {
    socket.close();
    setTimeout(() => process.exit(0), 50);
  }
});
