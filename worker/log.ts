import { DurableObject } from "cloudflare:workers";
import { decode, encode } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { CLOSE, FRAME, FRAME_ENTRY_BUDGET, HEARTBEAT_PING, HEARTBEAT_PONG, MAX_FRAME_BYTES, parseClientFrame, type RelayFrame } from "../protocol/frames.ts";
import { parsePullQuery, parsePushRequest, type LogEntry, type PushEntry } from "../protocol/messages.ts";
import { PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX } from "../protocol/limits.ts";
import type { Role } from "../protocol/token.ts";
import { checkPush } from "./auth.ts";
import { MSGPACK } from "../protocol/version.ts";
import * as store from "./log-store.ts";
import { errorResponse, toRelayError } from "./errors.ts";
import type { Env } from "./env.ts";

/** Who a socket belongs to; kept with the socket so it survives hibernation. */
interface SocketInfo {
  role: Role;
  sub: string;
  subscribed: boolean;
}

/** Headers the Worker sets on a verified upgrade; the DO is reachable only through the Worker. */
export const ROLE_HEADER = "x-relay-role";
export const SUB_HEADER = "x-relay-sub";

/** Backlog sent over the socket right after `sub`; further behind, the client pulls over HTTP. */
const SOCKET_BACKLOG_ENTRIES = 256;

/**
 * One Durable Object per database: the ordered changeset log. A thin adapter
 * from the runtime to the rules in log-store.ts. HTTP requests arrive from the
 * Worker already authenticated and validated; socket frames come straight
 * from clients, so they are checked here with the same shared functions.
 * Sockets use the Hibernation API: an idle database costs nothing, and
 * nothing in memory is needed to serve them after a wake-up.
 */
export class ChangesetLog extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  /** Identifies this in-memory instance in the x-relay-instance header: a new value means the object was evicted and rebuilt. */
  private readonly instance = crypto.randomUUID();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    store.migrate(this.sql);
    // Answered by the runtime itself: heartbeats never wake a hibernated object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
  }

  override async fetch(request: Request): Promise<Response> {
    try {
      const url = new URL(request.url);
      if (url.pathname === "/push" && request.method === "POST") {
        const body = parsePushRequest(decode(new Uint8Array(await request.arrayBuffer())));
        const { appended, ...res } = this.append(body.client, body.entries);
        return msgpack(res);
      }
      if (url.pathname === "/pull" && request.method === "GET") {
        const q = parsePullQuery(url.searchParams.get("after") ?? undefined, url.searchParams.get("limit") ?? undefined, PULL_LIMIT_MAX, PULL_LIMIT_DEFAULT);
        const res = msgpack(store.pull(this.sql, q.after, q.limit));
        res.headers.set("x-relay-instance", this.instance);
        return res;
      }
      if (url.pathname === "/ws") return this.accept(request);
      throw new RelayError("not_found", `no route ${request.method} ${url.pathname} in the log object`);
    } catch (e) {
      return errorResponse(e);
    }
  }

  private accept(request: Request): Response {
    const role = request.headers.get(ROLE_HEADER) as Role | null;
    const sub = request.headers.get(SUB_HEADER);
    if (!role || !sub) throw new RelayError("unauthorized", "socket upgrade without verified claims");
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ role, sub, subscribed: false } satisfies SocketInfo);
    return new Response(null, { status: 101, webSocket: client });
  }

  /**
   * Append, committed before anyone hears of it, then fan the new entries out
   * to subscribers, except to the socket that pushed them: its ack carries
   * their seqs, and echoing the bytes back would double what a live writer
   * receives (and what it costs us to send).
   */
  private append(client: string, entries: PushEntry[], from?: WebSocket) {
    // transactionSync: all-or-nothing; the output gate holds every response
    // and socket message until the write is durable.
    const res = this.ctx.storage.transactionSync(() => store.push(this.sql, client, entries, Date.now()));
    if (res.appended.length > 0) this.broadcast(res.appended, res.head, from);
    return res;
  }

  private broadcast(entries: LogEntry[], head: number, except?: WebSocket): void {
    const frames = framesFor(entries, head).map(encode);
    for (const ws of this.ctx.getWebSockets()) {
      if (ws === except || !(ws.deserializeAttachment() as SocketInfo | null)?.subscribed) continue;
      try {
        for (const f of frames) ws.send(f);
      } catch {
        // A socket closing under us: its client reconnects and resumes from its cursor.
      }
    }
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    let id: number | undefined;
    try {
      if (typeof message === "string") throw new RelayError("bad_request", `text frames other than "${HEARTBEAT_PING}" are not part of the protocol`);
      if (message.byteLength > MAX_FRAME_BYTES) throw new RelayError("payload_too_large", `frame exceeds ${MAX_FRAME_BYTES} bytes`);
      const raw = decode(new Uint8Array(message));
      id = typeof (raw as { id?: unknown })?.id === "number" ? (raw as { id: number }).id : undefined;
      const frame = parseClientFrame(raw);
      const info = ws.deserializeAttachment() as SocketInfo;
      if (frame.t === FRAME.sub) {
        ws.serializeAttachment({ ...info, subscribed: true } satisfies SocketInfo);
        const page = store.pull(this.sql, frame.after, SOCKET_BACKLOG_ENTRIES, FRAME_ENTRY_BUDGET);
        const frames = page.more ? [] : framesFor(page.entries, page.head);
        send(ws, frames.length === 1 ? frames[0]! : { t: FRAME.head, head: page.head });
        return;
      }
      checkPush(info, frame);
      const { appended, ...res } = this.append(frame.client, frame.entries, ws);
      send(ws, { t: FRAME.ack, id: frame.id, ...res });
    } catch (e) {
      const err = toRelayError(e);
      send(ws, { t: FRAME.error, ...(id === undefined ? {} : { id }), error: { code: err.code, message: err.message } });
      // An unreadable or oversized frame means the peer does not speak the
      // protocol: close. A refused push is an answer, not a reason to drop it.
      if (err.code === "bad_request" && id === undefined) ws.close(CLOSE.badPayload, "bad frame");
      else if (err.code === "payload_too_large") ws.close(CLOSE.tooBig, "frame too large");
      else if (err.code === "internal") ws.close(CLOSE.internal, "internal error");
    }
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    // 1005/1006 are reserved and may not be sent back.
    try {
      ws.close(code === 1005 || code === 1006 ? CLOSE.normal : code, "bye");
    } catch {
      // already closed
    }
  }

  override async webSocketError(): Promise<void> {
    // The runtime closes the socket; the client reconnects with backoff.
  }
}

function send(ws: WebSocket, frame: RelayFrame): void {
  try {
    ws.send(encode(frame));
  } catch {
    // Closed while we answered: nothing to do.
  }
}

/**
 * Consecutive entries packed into frames under the byte budget. An entry too
 * large for any frame ends the run with a `head` frame: the client fetches the
 * rest over HTTP.
 */
function framesFor(entries: LogEntry[], head: number): RelayFrame[] {
  const frames: RelayFrame[] = [];
  let batch: LogEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    if (e.changeset.byteLength > FRAME_ENTRY_BUDGET) {
      if (batch.length > 0) frames.push({ t: FRAME.entries, entries: batch, head });
      frames.push({ t: FRAME.head, head });
      return frames;
    }
    if (bytes + e.changeset.byteLength > FRAME_ENTRY_BUDGET) {
      frames.push({ t: FRAME.entries, entries: batch, head });
      batch = [];
      bytes = 0;
    }
    batch.push(e);
    bytes += e.changeset.byteLength;
  }
  if (batch.length > 0) frames.push({ t: FRAME.entries, entries: batch, head });
  return frames;
}

function msgpack(value: unknown): Response {
  return new Response(encode(value), { headers: { "content-type": MSGPACK } });
}
