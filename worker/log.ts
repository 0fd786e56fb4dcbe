import { DurableObject } from "cloudflare:workers";
import { decode, encode } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { CLOSE, FRAME, FRAME_ENTRY_BUDGET, HEARTBEAT_PING, HEARTBEAT_PONG, MAX_FRAME_BYTES, parseClientFrame } from "../protocol/frames.ts";
import { parsePullQuery, parsePushRequest, type LogEntry, type PushEntry } from "../protocol/messages.ts";
import { PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX } from "../protocol/limits.ts";
import type { Role } from "../protocol/token.ts";
import { checkPush } from "./auth.ts";
import { MSGPACK } from "../protocol/version.ts";
import * as store from "./log-store.ts";
import { framesFor, Outgoing, send } from "./outgoing.ts";
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

/** A socket push waiting for the next turn (see webSocketMessage). */
interface QueuedPush {
  ws: WebSocket;
  id: number;
  client: string;
  entries: PushEntry[];
}

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
  private queue: QueuedPush[] = [];

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
        this.drain(); // socket pushes that arrived first go first
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
    // No permessage-deflate: live frames are a few hundred bytes, and deflating
    // each one cost more than it saved (measured with `npm run bench`: ~300 µs
    // more per round trip, and Node's WebSocket inflates every message through
    // zlib's thread pool, ~70 µs of client CPU each). workerd takes an explicit
    // Sec-WebSocket-Extensions on the response as the agreement
    // (Response::send in workerd's api/http.c++) and keeps only the extensions
    // it implements, so naming none declines what the client offered.
    return new Response(null, { status: 101, webSocket: client, headers: { "sec-websocket-extensions": "none" } });
  }

  /** An HTTP push: appended at once, committed before anyone hears of it, then fanned out to subscribers. */
  private append(client: string, entries: PushEntry[]) {
    // transactionSync: all-or-nothing; the output gate holds every response
    // and socket message until the write is durable.
    const res = this.ctx.storage.transactionSync(() => store.push(this.sql, client, entries, Date.now()));
    const out = new Outgoing();
    for (const ws of this.subscribers()) out.entries(ws, res.appended, res.head);
    out.flush();
    return res;
  }

  /**
   * Append the queued socket pushes in arrival order, each all-or-nothing on
   * its own, and answer them. The pushing socket gets its ack and not the
   * entries (its ack stands for them); every other subscriber gets the
   * entries, coalesced across the batch.
   */
  private drain(): void {
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    const subs = this.subscribers();
    const out = new Outgoing();
    let head: number | undefined; // nothing else appends during this loop
    for (const p of batch) {
      try {
        const res = this.ctx.storage.transactionSync(() => store.push(this.sql, p.client, p.entries, Date.now(), head));
        head = res.head;
        for (const ws of subs) if (ws !== p.ws) out.entries(ws, res.appended, res.head);
        out.frame(p.ws, { t: FRAME.ack, id: p.id, acks: res.acks, head: res.head });
      } catch (e) {
        const err = toRelayError(e);
        out.frame(p.ws, { t: FRAME.error, id: p.id, error: { code: err.code, message: err.message } });
        if (err.code === "internal") p.ws.close(CLOSE.internal, "internal error");
      }
    }
    out.flush();
  }

  private subscribers(): WebSocket[] {
    return this.ctx.getWebSockets().filter((ws) => (ws.deserializeAttachment() as SocketInfo | null)?.subscribed);
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
        this.drain(); // the backlog must include pushes that arrived before
        ws.serializeAttachment({ ...info, subscribed: true } satisfies SocketInfo);
        const page = store.pull(this.sql, frame.after, SOCKET_BACKLOG_ENTRIES, FRAME_ENTRY_BUDGET);
        const frames = page.more ? [] : framesFor(page.entries, page.head);
        send(ws, frames.length === 1 ? frames[0]! : { t: FRAME.head, head: page.head });
        return;
      }
      checkPush(info, frame);
      // Appended on the next turn, not now: workerd delivers the messages it
      // has already received before a timer fires, so a burst of pushes (many
      // writers, or one fast one) becomes one batch with one storage commit,
      // which is most of what a push costs (~150 µs of the relay's CPU each,
      // measured). An idle log loses nothing: the timer fires at once.
      this.queue.push({ ws, id: frame.id, client: frame.client, entries: frame.entries });
      if (this.queue.length === 1) setTimeout(() => this.drain(), 0);
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

function msgpack(value: unknown): Response {
  return new Response(encode(value), { headers: { "content-type": MSGPACK } });
}
