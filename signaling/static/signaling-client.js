// signaling-client.js: browser client for signaling protocol v1 (ES module, no dependencies).
//
//   import { SignalingClient, PeerCall } from "/client.js";
//   const client = new SignalingClient("wss://signal.example.com/ws", { userId: "alice" });
//   await client.connect();
//   const { participants } = await client.join("room-1");
//
// Every server frame is dispatched as an event named after its type
// ("user-joined", "offer", ...) with the frame as `event.detail`.
//
// A connection that drops comes back on its own (protocol/SPEC.md §10): the
// client emits "reconnecting", connects again asking to resume, and then
// either "resumed" (the server kept its seats: the others noticed nothing,
// the frames held for it follow, calls go on) or "rejoined" (too late: it
// joined its sessions again and the others will call it afresh). What the app
// sends meanwhile (ICE candidates, state reports) waits and goes out on resume.

/**
 * A request the server refused (`code` is the protocol's error code, `frame` the
 * `error` frame), or a connection that ended before `welcome`: then `code` is
 * `"network"` (no close frame: the server is down or unreachable, or TLS failed)
 * or `"closed"` (the server closed it; `closeCode` and the message say why).
 */
export class SignalingError extends Error {
  constructor(frame, closeCode = null) {
    super(frame.message);
    this.name = "SignalingError";
    this.code = frame.code;
    this.frame = frame;
    this.closeCode = closeCode;
  }
}

// Close codes after which trying again can help: going away, abnormal closure
// (no close frame), server error, try again later.
const RETRY_CODES = new Set([1001, 1006, 1011, 1013, 4408]);

// Frames kept while reconnecting, sent on resume (dropped if it rejoins instead).
const QUEUE_MAX = 512;

function closedError(event) {
  const code = event.code === 1006 ? "network" : "closed";
  const message =
    event.code === 1006
      ? "could not reach the signaling server (the connection failed or dropped without a close frame)"
      : `the server closed the connection (${event.code}${event.reason ? `: ${event.reason}` : ""})`;
  return new SignalingError({ code, message }, event.code);
}

export class SignalingClient extends EventTarget {
  /**
   * @param {string} url  ws:// or wss:// URL of /ws
   * @param {{userId: string, token?: string, getToken?: () => Promise<string>,
   *          reconnect?: boolean, minDelay?: number, maxDelay?: number}} options
   *   `reconnect` (default true): after an established connection drops
   *   (1001, 1006, 1011, 1013, 4408), connect again with backoff, resuming
   *   (or else re-joining).
   */
  constructor(url, options) {
    super();
    this.url = url;
    this.options = { reconnect: true, minDelay: 500, maxDelay: 10000, ...options };
    this.userId = options.userId;
    this.connectionId = null;
    this.iceServers = [];
    this.sessions = new Set();
    this._pending = new Map();
    this._nextId = 1;
    this._ws = null;
    this._welcomed = false;
    this._closedByUser = false;
    this._attempt = 0;
    this.resumeToken = null;
    this.resumeWindowMs = 0;
    this._reconnecting = false;
    this._queued = [];
  }

  /** True while a dropped connection is being re-established. */
  get reconnecting() {
    return this._reconnecting;
  }

  /** True while authenticated over an open connection. */
  get connected() {
    return this._welcomed && this._ws !== null && this._ws.readyState === WebSocket.OPEN;
  }

  /**
   * Open the WebSocket and authenticate; resolves with the `welcome` frame.
   * Rejects with a SignalingError (see its doc). A rejected connect() does not
   * try again on its own; with `{retry: true}` it keeps trying with backoff
   * while the failure is one that can pass (network, 1001, 1011, 1013) and
   * until close() is called.
   */
  async connect({ retry = false } = {}) {
    this._closedByUser = false;
    for (;;) {
      try {
        return await this._open(this._reconnecting ? this.resumeToken : null);
      } catch (error) {
        if (!retry || this._closedByUser || !RETRY_CODES.has(error.closeCode)) throw error;
        await this._backoff();
        if (this._closedByUser) throw error;
      }
    }
  }

  _open(resume) {
    const tokenPromise = this.options.getToken
      ? this.options.getToken()
      : Promise.resolve(this.options.token);
    return tokenPromise.then(
      (token) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(this.url, "signaling.v1.json");
          this._ws = ws;
          this._welcomed = false;
          let welcomed = false;
          let refused = false;
          ws.onopen = () => {
            const auth = { type: "auth", userId: this.userId };
            if (token) auth.token = token;
            if (resume) auth.resume = resume;
            ws.send(JSON.stringify(auth));
          };
          ws.onmessage = (event) => {
            const frame = JSON.parse(event.data);
            if (!welcomed) {
              if (frame.type === "welcome") {
                welcomed = true;
                this._welcomed = true;
                this._attempt = 0;
                this.connectionId = frame.connectionId;
                this.iceServers = frame.iceServers;
                this.resumeToken = frame.resumeToken ?? null;
                this.resumeWindowMs = frame.resumeWindowMs ?? 0;
                this._emit("welcome", frame);
                if (frame.resumed === true) {
                  // Back in its sessions: before the held frames (the next messages)
                  // are dispatched, say so and send what waited.
                  this._reconnecting = false;
                  this.sessions = new Set(frame.sessions ?? []);
                  const queued = this._queued;
                  this._queued = [];
                  for (const waiting of queued) ws.send(JSON.stringify(waiting));
                  this._emit("resumed", { welcome: frame, sessions: [...this.sessions] });
                } else {
                  this._queued = [];
                }
                resolve(frame);
              } else if (frame.type === "error") {
                refused = true;
                reject(new SignalingError(frame));
              }
              return;
            }
            this._receive(frame);
          };
          ws.onclose = (event) => {
            if (this._ws === ws) this._welcomed = false;
            for (const { reject: fail } of this._pending.values()) {
              fail(closedError(event));
            }
            this._pending.clear();
            // Only an established connection comes back on its own: a failed
            // connect() is the caller's to retry (see connect's `retry`).
            const willReconnect =
              welcomed && this.options.reconnect && !this._closedByUser && RETRY_CODES.has(event.code);
            // A failed try of a reconnect under way: connect()'s retry tries again.
            const retrying =
              !welcomed && this._reconnecting && !this._closedByUser && RETRY_CODES.has(event.code);
            this._emit("close", {
              code: event.code,
              reason: event.reason,
              willReconnect: willReconnect || retrying,
            });
            if (!welcomed && !refused) reject(closedError(event));
            if (willReconnect) {
              this._reconnecting = true;
              this._reconnect();
            }
          };
        }),
    );
  }

  _backoff() {
    const delay = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this._attempt);
    this._attempt += 1;
    this._emit("reconnecting", { delay, attempt: this._attempt });
    return new Promise((r) => setTimeout(r, delay * (0.5 + Math.random() / 2)));
  }

  async _reconnect() {
    await this._backoff();
    if (this._closedByUser) return;
    let welcome;
    try {
      welcome = await this.connect({ retry: true });
    } catch (error) {
      // refused (say, the token expired) or closed by the user: stop here
      this._reconnecting = false;
      this._queued = [];
      this._emit("reconnect-failed", { error });
      return;
    }
    if (welcome.resumed === true) {
      // "resumed" went out with the welcome; "reconnected" is for older apps
      this._emit("reconnected", { resumed: true, sessions: [...this.sessions], joined: [], welcome });
      return;
    }
    this._reconnecting = false;
    const sessions = [...this.sessions];
    const joined = [];
    for (const sessionId of sessions) {
      try {
        joined.push(await this.join(sessionId));
      } catch (error) {
        // dropped again: that connection's close handler takes over
        if (error.closeCode !== null) return;
        // refused (say, the session filled up meanwhile): report it, keep the rest
        this.sessions.delete(sessionId);
        this._emit("error", error.frame);
      }
    }
    this._emit("rejoined", { sessions, joined, welcome });
    this._emit("reconnected", { resumed: false, sessions, joined, welcome });
  }

  _receive(frame) {
    if (frame.replyTo && this._pending.has(frame.replyTo)) {
      const { resolve, reject } = this._pending.get(frame.replyTo);
      this._pending.delete(frame.replyTo);
      if (frame.type === "error") reject(new SignalingError(frame));
      else resolve(frame);
      return;
    }
    if (frame.type === "error" && frame.code === "replaced" && frame.sessionId) {
      this.sessions.delete(frame.sessionId);
    }
    this._emit(frame.type, frame);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * Send a frame as it is. While a dropped connection is coming back, signals
   * and state reports wait (up to 512) and go out if it resumes.
   */
  send(frame) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN && this._welcomed) {
      this._ws.send(JSON.stringify(frame));
      return;
    }
    const waits = ["offer", "answer", "ice-candidate", "connection-state"].includes(frame.type);
    if (this._reconnecting && waits && this._queued.length < QUEUE_MAX) {
      this._queued.push(frame);
      return;
    }
    throw new Error("not connected");
  }

  /** Send a frame with a fresh id; resolves with the reply, rejects with SignalingError. */
  request(frame) {
    const id = `r${this._nextId++}`;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      try {
        this.send({ ...frame, id });
      } catch (error) {
        this._pending.delete(id);
        reject(error);
      }
    });
  }

  async join(sessionId) {
    const reply = await this.request({ type: "join-session", sessionId });
    this.sessions.add(sessionId);
    return reply;
  }

  async leave(sessionId) {
    const reply = await this.request({ type: "leave-session", sessionId });
    this.sessions.delete(sessionId);
    return reply;
  }

  sendOffer(to, sessionId, sdp) {
    this.send({ type: "offer", to, sessionId, data: { sdp } });
  }

  sendAnswer(to, sessionId, sdp) {
    this.send({ type: "answer", to, sessionId, data: { sdp } });
  }

  sendCandidate(to, sessionId, candidate) {
    this.send({ type: "ice-candidate", to, sessionId, data: { candidate } });
  }

  reportState(sessionId, state) {
    this.send({ type: "connection-state", sessionId, state });
  }

  /** Close for good (no reconnect). */
  close(code = 1000, reason = "") {
    this._closedByUser = true;
    if (this._ws) this._ws.close(code, reason);
  }
}

/**
 * One RTCPeerConnection to one other participant, with perfect negotiation:
 * the user with the smaller userId is polite. Trickle ICE, ICE servers from
 * `welcome`, an ICE restart when ICE fails, states reported to the server.
 */
export class PeerCall extends EventTarget {
  /**
   * @param {{stream?: MediaStream|null, offer?: object}} options  `offer`: the peer's
   *   offer frame that made us create this call; we answer it, then add our tracks
   *   to the answer (no second negotiation, no glare).
   */
  constructor(client, sessionId, peerUserId, { stream = null, offer = null } = {}) {
    super();
    this.client = client;
    this.sessionId = sessionId;
    this.peer = peerUserId;
    this.polite = client.userId < peerUserId;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.pc = new RTCPeerConnection({ iceServers: client.iceServers });
    const pc = this.pc;
    this.negotiations = 0;
    pc.onnegotiationneeded = async () => {
      this.negotiations += 1;
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        client.sendOffer(this.peer, sessionId, pc.localDescription.toJSON());
      } catch (error) {
        console.error(`offer to ${this.peer} failed:`, error);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      client.sendCandidate(this.peer, sessionId, candidate ? candidate.toJSON() : null);
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed") pc.restartIce();
    };
    pc.onconnectionstatechange = () => {
      try {
        client.reportState(sessionId, pc.connectionState);
      } catch (error) {
        // not connected to the signaling server at the moment
      }
      this.dispatchEvent(new CustomEvent("state", { detail: pc.connectionState }));
    };
    pc.ontrack = ({ streams }) => {
      this.dispatchEvent(new CustomEvent("stream", { detail: streams[0] }));
    };
    // Tracks last, once every handler is in place: negotiationneeded may fire early.
    // Answering an offer, they join the answer instead (see _signal).
    this._pendingStream = offer ? stream : null;
    if (stream && !offer) for (const track of stream.getTracks()) pc.addTrack(track, stream);
    // Signals are applied one at a time, in arrival order: a candidate must not
    // overtake the offer it belongs to while that offer is still being applied.
    this._queue = Promise.resolve();
    this._onSignal = (event) => {
      this._queue = this._queue
        .then(() => this._signal(event.detail))
        .catch((error) => {
          console.error(`signal from ${this.peer} failed:`, error);
          this.dispatchEvent(new CustomEvent("error", { detail: error }));
        });
    };
    for (const type of ["offer", "answer", "ice-candidate"]) {
      client.addEventListener(type, this._onSignal);
    }
    if (offer) this._onSignal({ detail: offer });
  }

  async _signal(frame) {
    if (frame.from !== this.peer || frame.sessionId !== this.sessionId) return;
    const pc = this.pc;
    if (frame.type === "ice-candidate") {
      try {
        await pc.addIceCandidate(frame.data.candidate ?? undefined);
      } catch (error) {
        if (!this.ignoreOffer) throw error;
      }
      return;
    }
    const description = frame.data.sdp;
    const collision =
      description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) return;
    await pc.setRemoteDescription(description);
    if (this._pendingStream) {
      const stream = this._pendingStream;
      this._pendingStream = null;
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
    }
    if (description.type === "offer") {
      await pc.setLocalDescription();
      this.client.sendAnswer(this.peer, this.sessionId, pc.localDescription.toJSON());
    }
  }

  /** The selected ICE candidate pair: {local, remote} candidate types and protocol. */
  async selectedPair() {
    const stats = await this.pc.getStats();
    let pair = null;
    stats.forEach((report) => {
      if (report.type === "transport" && report.selectedCandidatePairId) {
        pair = stats.get(report.selectedCandidatePairId);
      }
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      local: local && `${local.candidateType} ${local.protocol} ${local.address}:${local.port}`,
      remote: remote && `${remote.candidateType} ${remote.protocol} ${remote.address}:${remote.port}`,
    };
  }

  hangUp() {
    for (const type of ["offer", "answer", "ice-candidate"]) {
      this.client.removeEventListener(type, this._onSignal);
    }
    this.pc.close();
  }
}
