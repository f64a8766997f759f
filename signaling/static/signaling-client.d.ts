// Type declarations for signaling-client.js (signaling protocol v1).

export interface IceServer { urls: string | string[]; username?: string; credential?: string }
export interface Welcome {
  type: "welcome"; userId: string; connectionId: string; iceServers: IceServer[];
  /** v1.1 (protocol/SPEC.md §10): send it back as auth's `resume` after a drop. */
  resumeToken?: string; resumeWindowMs?: number;
  /** Present when the auth asked to resume; `sessions` when it did. */
  resumed?: boolean; sessions?: string[];
}
export interface SessionJoined { type: "session-joined"; sessionId: string; participants: string[]; replyTo?: string }
export interface SessionLeft { type: "session-left"; sessionId: string; replyTo?: string }
export interface UserJoined { type: "user-joined"; sessionId: string; userId: string }
export interface UserLeft { type: "user-left"; sessionId: string; userId: string }
export interface Relayed<T extends "offer" | "answer" | "ice-candidate", D> {
  type: T; from: string; to: string; sessionId: string; data: D; id?: string
}
export type Offer = Relayed<"offer", { sdp: RTCSessionDescriptionInit }>;
export type Answer = Relayed<"answer", { sdp: RTCSessionDescriptionInit }>;
export type IceCandidate = Relayed<"ice-candidate", { candidate: RTCIceCandidateInit | null }>;
export type ErrorCode =
  | "bad-frame" | "unauthorized" | "forbidden" | "not-in-session" | "peer-not-found"
  | "session-full" | "rate-limited" | "too-large" | "replaced" | "internal";
export interface ErrorFrame {
  type: "error"; code: ErrorCode; message: string; replyTo?: string; retryAfterMs?: number; sessionId?: string
}
export type ServerFrame =
  | Welcome | SessionJoined | SessionLeft | UserJoined | UserLeft | Offer | Answer | IceCandidate | ErrorFrame;

export interface CloseDetail { code: number; reason: string; willReconnect: boolean }

export interface SignalingEventMap {
  "welcome": CustomEvent<Welcome>;
  "session-joined": CustomEvent<SessionJoined>;
  "session-left": CustomEvent<SessionLeft>;
  "user-joined": CustomEvent<UserJoined>;
  "user-left": CustomEvent<UserLeft>;
  "offer": CustomEvent<Offer>;
  "answer": CustomEvent<Answer>;
  "ice-candidate": CustomEvent<IceCandidate>;
  "error": CustomEvent<ErrorFrame>;
  "close": CustomEvent<CloseDetail>;
  "reconnecting": CustomEvent<{ delay: number; attempt: number }>;
  /** Back in its sessions; the others noticed nothing; held frames follow. */
  "resumed": CustomEvent<{ welcome: Welcome; sessions: string[] }>;
  /** Not resumed (too late, or resume off): it joined its sessions again. */
  "rejoined": CustomEvent<{ sessions: string[]; joined: SessionJoined[]; welcome: Welcome }>;
  /** After either of the two above. */
  "reconnected": CustomEvent<{ resumed: boolean; sessions: string[]; joined: SessionJoined[]; welcome: Welcome }>;
  /** Reconnecting stopped: the server refused (say, an expired token) or close() was called. */
  "reconnect-failed": CustomEvent<{ error: SignalingError }>;
}

/**
 * A refused request (`code` from the server's `error` frame), or a connection
 * that ended before `welcome`: `"network"` (no close frame: down, unreachable,
 * TLS failure) or `"closed"` (the server closed it; see `closeCode`).
 */
export class SignalingError extends Error {
  readonly code: ErrorCode | "network" | "closed";
  readonly frame: ErrorFrame | { code: "network" | "closed"; message: string };
  readonly closeCode: number | null;
}

export interface SignalingOptions {
  userId: string;
  token?: string;
  getToken?: () => Promise<string>;
  reconnect?: boolean;
  minDelay?: number;
  maxDelay?: number;
}

export class SignalingClient extends EventTarget {
  constructor(url: string, options: SignalingOptions);
  readonly userId: string;
  connectionId: string | null;
  iceServers: IceServer[];
  readonly sessions: Set<string>;
  /** True while authenticated over an open connection. */
  readonly connected: boolean;
  /** True while a dropped connection is coming back (signals sent meanwhile wait). */
  readonly reconnecting: boolean;
  /** The latest welcome's resume token (protocol/SPEC.md §10). */
  readonly resumeToken: string | null;
  readonly resumeWindowMs: number;
  /** Rejects at once on failure unless `retry` (then it tries with backoff until close()). */
  connect(options?: { retry?: boolean }): Promise<Welcome>;
  join(sessionId: string): Promise<SessionJoined>;
  leave(sessionId: string): Promise<SessionLeft>;
  request(frame: object): Promise<ServerFrame>;
  send(frame: object): void;
  sendOffer(to: string, sessionId: string, sdp: RTCSessionDescriptionInit): void;
  sendAnswer(to: string, sessionId: string, sdp: RTCSessionDescriptionInit): void;
  sendCandidate(to: string, sessionId: string, candidate: RTCIceCandidateInit | null): void;
  reportState(sessionId: string, state: string): void;
  close(code?: number, reason?: string): void;
  addEventListener<K extends keyof SignalingEventMap>(
    type: K, listener: (event: SignalingEventMap[K]) => void, options?: boolean | AddEventListenerOptions
  ): void;
}

export class PeerCall extends EventTarget {
  constructor(
    client: SignalingClient, sessionId: string, peerUserId: string,
    options?: { stream?: MediaStream | null; offer?: Offer | null }
  );
  readonly pc: RTCPeerConnection;
  readonly polite: boolean;
  selectedPair(): Promise<{ local: string; remote: string } | null>;
  hangUp(): void;
  addEventListener(type: "state", listener: (event: CustomEvent<RTCPeerConnectionState>) => void): void;
  addEventListener(type: "stream", listener: (event: CustomEvent<MediaStream>) => void): void;
}
