import { decode, encode } from "../../protocol/codec.ts";
import { RelayError } from "../errors.ts";
import { FRAME, HEARTBEAT_PING, HEARTBEAT_PONG, MAX_FRAME_BYTES, parseRelayFrame, type ClientFrame, type RelayFrame } from "../../protocol/frames.ts";
import { GOT_EVERY_BYTES } from "../../protocol/limits.ts";
import { backoffDelay, type BackoffOptions } from "../backoff.ts";

/**
 * The live connection: one WebSocket, reconnected with full-jitter backoff
 * until stopped. It knows nothing of replicas; the delegate decides what to
 * send on open and what a frame means.
 *
 *   stopped ──start()──▶ connecting ──open──▶ open
 *      ▲                  ▲      │              │
 *      │                  │    fail     close / error / missed heartbeat
 *      │                  │      ▼              ▼
 *      │                  └──── waiting(attempt) ◀┘
 *      └──── stop() from any state
 */
export type SocketState =
  | { name: "stopped" }
  | { name: "connecting"; attempt: number }
  | { name: "open" }
  | { name: "waiting"; attempt: number };

export interface SocketDelegate {
  /** Connected: send whatever resumes the session (subscribe from the cursor, flush pushes). */
  opened(send: (frame: ClientFrame) => boolean): void;
  frame(frame: RelayFrame): void;
  /** The connection went down (or failed to come up); `attempt` counts failures in a row. */
  closed(attempt: number): void;
}

/** The subset of the WebSocket API we use: the browser's, Node's (undici), or a test double. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface LiveSocketOptions {
  /** ws(s):// URL of the database's socket route, token included when needed; a function is asked on each connection (a fresh token). */
  url: string | (() => string | Promise<string>);
  backoff: BackoffOptions;
  /** How often to send a heartbeat, and how long silence may last before the socket counts as dead. */
  heartbeatMs?: number;
  createWebSocket?: (url: string) => WebSocketLike;
}

const OPEN = 1;

export class LiveSocket {
  private state: SocketState = { name: "stopped" };
  private ws: WebSocketLike | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private lastHeard = 0;
  /** Binary bytes read on the current connection, and how many of them the relay has been told of (`got`). */
  private read = 0;
  private reported = 0;
  private readonly opts: LiveSocketOptions;
  private readonly delegate: SocketDelegate;

  constructor(opts: LiveSocketOptions, delegate: SocketDelegate) {
    this.opts = opts;
    this.delegate = delegate;
  }

  get current(): SocketState {
    return this.state;
  }

  get connected(): boolean {
    return this.state.name === "open";
  }

  start(): void {
    if (this.state.name === "stopped") void this.connect(0);
  }

  stop(): void {
    this.state = { name: "stopped" };
    this.clearTimers();
    this.drop();
  }

  /** Drop the current connection as if the network failed (tests and the heartbeat use this). */
  interrupt(): void {
    this.ws?.close(4000, "interrupted");
  }

  send(frame: ClientFrame): boolean {
    if (this.state.name !== "open" || this.ws?.readyState !== OPEN) return false;
    const bytes = encode(frame);
    if (bytes.byteLength > MAX_FRAME_BYTES) throw new RelayError("payload_too_large", `frame of ${bytes.byteLength} bytes exceeds ${MAX_FRAME_BYTES}`);
    this.ws.send(bytes);
    return true;
  }

  private async connect(attempt: number): Promise<void> {
    const state: SocketState = (this.state = { name: "connecting", attempt });
    let ws: WebSocketLike;
    try {
      const url = typeof this.opts.url === "string" ? this.opts.url : await this.opts.url();
      if (this.state !== state) return; // stopped meanwhile
      ws = (this.opts.createWebSocket ?? defaultWebSocket)(url);
    } catch {
      return this.failed(attempt);
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.state = { name: "open" };
      this.lastHeard = Date.now();
      this.read = this.reported = 0;
      this.startHeartbeat();
      this.delegate.opened((f) => this.send(f));
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      if (ev.data === HEARTBEAT_PONG) return;
      let frame: RelayFrame;
      try {
        const bytes = toBytes(ev.data);
        frame = parseRelayFrame(decode(bytes));
        this.read += bytes.byteLength;
      } catch {
        // A relay that does not speak our protocol: reconnecting will not help
        // soon, but backoff keeps it cheap.
        return ws.close(4001, "bad frame");
      }
      // Flow control: the relay sends this socket only so much more than we
      // report reading; after a `head` it waits for the report to resume.
      if (frame.t === FRAME.head || this.read - this.reported >= GOT_EVERY_BYTES) {
        this.reported = this.read;
        this.send({ t: FRAME.got, bytes: this.read });
      }
      this.delegate.frame(frame);
    };
    ws.onerror = () => {
      // onclose follows and handles it.
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      const wasOpen = this.state.name === "open";
      this.drop();
      if (this.state.name === "stopped") return;
      this.failed(wasOpen ? 0 : attempt + 1);
    };
  }

  private failed(attempt: number): void {
    this.clearTimers();
    this.state = { name: "waiting", attempt };
    this.delegate.closed(attempt);
    if (this.state.name !== "waiting") return; // the delegate stopped us
    const delay = attempt === 0 ? 0 : backoffDelay(attempt - 1, this.opts.backoff);
    this.timer = setTimeout(() => void this.connect(attempt), delay);
  }

  private startHeartbeat(): void {
    const every = this.opts.heartbeatMs ?? 15_000;
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastHeard > 2 * every) return this.interrupt();
      try {
        this.ws?.send(HEARTBEAT_PING);
      } catch {
        this.interrupt();
      }
    }, every);
    // A heartbeat must not keep a Node process alive on its own.
    (this.heartbeat as { unref?: () => void }).unref?.();
  }

  private clearTimers(): void {
    clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    this.timer = this.heartbeat = undefined;
  }

  private drop(): void {
    const ws = this.ws;
    this.ws = undefined;
    clearInterval(this.heartbeat);
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000, "bye");
    } catch {
      // already closed
    }
  }
}

function defaultWebSocket(url: string): WebSocketLike {
  const WS = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (!WS) throw new RelayError("bad_request", "no WebSocket in this runtime: pass createWebSocket");
  return new WS(url);
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new RelayError("bad_request", "expected a binary frame");
}

/** ws(s)://…/v1/db/:db/ws?token=… — browsers cannot set headers on a WebSocket, so the token rides in the query. */
export function socketUrl(base: string, db: string, token: string | undefined): string {
  const u = new URL(`${base.replace(/\/+$/, "")}/v1/db/${encodeURIComponent(db)}/ws`);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  if (token) u.searchParams.set("token", token);
  return u.toString();
}
