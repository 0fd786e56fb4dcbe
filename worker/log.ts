import { DurableObject } from "cloudflare:workers";
import { decode, encode } from "../protocol/codec.ts";
import type { TableHeader } from "../protocol/changeset.ts";
import { RelayError } from "../protocol/errors.ts";
import { CLOSE, FRAME, FRAME_ENTRY_BUDGET, HEARTBEAT_PING, HEARTBEAT_PONG, MAX_FRAME_BYTES, parseClientFrame, type RelayFrame } from "../protocol/frames.ts";
import type { EntryPart, PushEntry, PushResponse } from "../protocol/messages.ts";
import type { SchemaVersion } from "../protocol/schema.ts";
import { expiresAt, roleAtLeast, ROLES, type Role, type TokenClaims } from "../protocol/token.ts";
import { isName } from "../protocol/validate.ts";
import { MSGPACK } from "../protocol/version.ts";
import { checkPush } from "./push-check.ts";
import { bindClient } from "./identity.ts";
import * as store from "./log-store.ts";
import * as entryParts from "./entry-parts.ts";
import { bodyLimit, partBytes } from "./config.ts";
import { maxEntryBytes, PULL_BYTE_BUDGET } from "../protocol/limits.ts";
import { ShapeCache } from "./schema-store.ts";
import { framesFor, NEW_FLOW, noteGot, Outgoing, send, type Flow } from "./outgoing.ts";
import { PushQueue } from "./push-queue.ts";
import { errorResponse, outcome, toRelayError, type Outcome } from "./errors.ts";
import { fromPushArgs, pushSize, type PushArgs } from "./push-args.ts";
import { Admission } from "./admission.ts";
import type { Env } from "./env.ts";
import { call as snapshotCall, snapshotDue, type SnapshotCall } from "./snapshots.ts";

/** Who a socket belongs to, and its flow control (outgoing.ts); kept with the socket so it survives hibernation. */
interface SocketInfo extends Flow {
  role: Role;
  sub: string;
  /** When its token stops being honoured (ms; null: never): the socket is closed then. */
  until: number | null;
  subscribed: boolean;
}

/** A verified caller, as the Worker hands it to the log. */
export type Caller = Pick<TokenClaims, "role" | "sub">;

/** Backlog sent over the socket right after `sub`; further behind, the client pulls over HTTP. */
const SOCKET_BACKLOG_ENTRIES = 256;

/**
 * One Durable Object per database: the ordered changeset log. A thin adapter
 * from the runtime to the rules in log-store.ts. The Worker calls it through
 * RPC methods (push, pull, subscribe) with arguments it has already
 * authenticated and validated; socket frames come straight from clients, so
 * they are checked here with the same shared functions. Sockets use the
 * Hibernation API: an idle database costs nothing, and nothing in memory is
 * needed to serve them after a wake-up.
 */
export class ChangesetLog extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  /** Identifies this in-memory instance: a new value means the object was evicted and rebuilt (the Worker reports it as x-relay-instance). */
  private readonly instance = crypto.randomUUID();
  private readonly queue = new PushQueue<WebSocket>();
  private readonly admission = new Admission();
  /** Table shapes by schema version (immutable once committed); cleared when a push fails. */
  private readonly shapes = new ShapeCache();
  /** The head at which replicas were last asked for a snapshot. */
  private asked = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    store.migrate(this.sql);
    // Answered by the runtime itself: heartbeats never wake a hibernated object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
  }

  /**
   * RPC: an HTTP push, validated by the Worker. Appended at once, committed
   * before anyone hears of it, then fanned out. `schema`: versions to add
   * first (their DDL runs here); the caller's role decides whether it may.
   */
  async push(client: string, args: PushArgs, caller: Caller, schema: SchemaVersion[] = []): Promise<Outcome<PushResponse>> {
    const size = pushSize(args, schema);
    const admitted = outcome(() => this.admission.admit(admittedAs(client, caller), size.entries, size.bytes));
    if ("error" in admitted) {
      if ("bytes" in args) await args.bytes.cancel().catch(() => undefined);
      return admitted;
    }
    const entries = await fromPushArgs(args);
    return outcome(() => {
      this.drain(); // socket pushes that arrived first go first
      // transactionSync: all-or-nothing; the output gate holds every response
      // and socket message until the write is durable.
      const { appended, ...res } = this.guarded(() => this.append(client, entries, caller, Date.now(), undefined, schema, args.tables));
      const out = new Outgoing();
      for (const ws of this.subscribers()) out.entries(ws, appended, res.head);
      out.flush();
      this.askForSnapshot(res.head);
      return res;
    });
  }

  /**
   * RPC: one part of an entry larger than one request (entry-parts.ts),
   * validated as far as the Worker can (sizes, the caller's role). The part
   * that completes the entry appends it, in one transaction with that part;
   * a refusal also forgets what was staged of it (the log is unchanged, and
   * the client's later entries are not held behind it).
   */
  async pushPart(client: string, part: EntryPart, caller: Caller): Promise<Outcome<PushResponse>> {
    const admitted = outcome(() => this.admission.admit(admittedAs(client, caller), 1, part.data.byteLength));
    if ("error" in admitted) return admitted;
    return outcome(() => {
      this.drain();
      const opts = { partBytes: partBytes(this.env), maxChangeBytes: maxEntryBytes(bodyLimit(this.env)), shapes: this.shapes, sub: caller.sub };
      let res: ReturnType<typeof entryParts.putPart>;
      try {
        res = this.guarded(() => {
          bindClient(this.sql, client, caller, Date.now());
          return entryParts.putPart(this.sql, client, part, Date.now(), opts);
        });
      } catch (e) {
        const err = toRelayError(e);
        if (!err.retryable && err.code !== "forbidden") this.ctx.storage.transactionSync(() => entryParts.drop(this.sql, client, part.cseq));
        throw e;
      }
      if (res.appended) {
        // Never sent over a socket (it passes any frame): subscribers hear of the new head and pull it in parts.
        const out = new Outgoing();
        for (const ws of this.subscribers()) out.frame(ws, { t: FRAME.head, head: res.head });
        out.flush();
        this.askForSnapshot(res.head);
      }
      return { acks: res.acks, head: res.head };
    });
  }

  /** RPC: part `idx` of entry `seq` (a pull in parts), as a Response like pull's (its body streams; a value is cloned whole). */
  entryPart(seq: number, idx: number): Response {
    try {
      const bytes = entryParts.readPart(this.sql, seq, idx, partBytes(this.env));
      return new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { "content-type": "application/octet-stream" } });
    } catch (e) {
      return errorResponse(e);
    }
  }

  /**
   * RPC: one page of the log after `after`; the Worker has checked both
   * numbers. Encoded here and returned as a Response, whose body streams:
   * a page always holds at least one entry, whatever its size, so as a value
   * it could pass RPC's 32 MiB limit. `parts`: the client fetches entries
   * larger than a part in parts (listed by size here), as clients since
   * issue 18 do; older ones get entries whole up to what a request (or a
   * full page) carries, and `upgrade_required` for a larger one.
   */
  pull(after: number, limit: number, parts = false): Response {
    try {
      const headers = { "content-type": MSGPACK, "x-relay-instance": this.instance };
      // Without parts, an entry larger than a request (or a full page) is not sent whole either (entry-parts.ts wholeOnly).
      const whole = Math.max(maxEntryBytes(bodyLimit(this.env)), PULL_BYTE_BUDGET);
      const page = store.pull(this.sql, after, limit, undefined, parts ? partBytes(this.env) : whole);
      return new Response(encode(parts ? page : entryParts.wholeOnly(page, whole)), { headers });
    } catch (e) {
      return errorResponse(e);
    }
  }

  /** RPC: snapshot uploads, downloads, hash reports, status and compaction (snapshots.ts), authorized by the Worker. */
  async snapshots(c: SnapshotCall, sub: string): Promise<Outcome<unknown>> {
    try {
      this.drain();
      const host = { sql: this.sql, env: this.env, transaction: <T>(fn: () => T) => this.ctx.storage.transactionSync(fn), sockets: () => this.ctx.getWebSockets().length };
      return { ok: await snapshotCall(host, c, sub) };
    } catch (e) {
      return outcome(() => {
        throw e;
      });
    }
  }

  /**
   * A live socket for a caller the Worker has authenticated: the one call
   * that is not RPC, because RPC cannot carry a WebSocket (workerd refuses to
   * serialize one: DataCloneError). So the Worker forwards the upgrade with
   * subscribeRequest() and the claims it verified; nothing else reaches fetch.
   */
  override async fetch(request: Request): Promise<Response> {
    const { role, sub, until } = claimsOf(request);
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ role, sub, until, subscribed: false, ...NEW_FLOW } satisfies SocketInfo);
    if (until !== null) await this.wakeAt(until);
    // No permessage-deflate: live frames are a few hundred bytes, and deflating
    // each one cost more than it saved (measured with `npm run bench`: ~300 µs
    // more per round trip, and Node's WebSocket inflates every message through
    // zlib's thread pool, ~70 µs of client CPU each). workerd takes an explicit
    // Sec-WebSocket-Extensions on the response as the agreement
    // (Response::send in workerd's api/http.c++) and keeps only the extensions
    // it implements, so naming none declines what the client offered.
    return new Response(null, { status: 101, webSocket: client, headers: { "sec-websocket-extensions": "none" } });
  }

  /**
   * Append the queued socket pushes in arrival order, each all-or-nothing on
   * its own, and answer them. The pushing socket gets its ack and not the
   * entries (its ack stands for them); every other subscriber gets the
   * entries, coalesced across the batch.
   */
  private drain(): void {
    const batch = this.queue.take();
    if (batch.length === 0) return;
    const subs = this.subscribers();
    const out = new Outgoing();
    let head: number | undefined; // nothing else appends during this loop
    for (const p of batch) {
      try {
        const caller = p.socket.deserializeAttachment() as SocketInfo;
        const res = this.guarded(() => this.append(p.client, p.entries, caller, Date.now(), head));
        head = res.head;
        for (const ws of subs) if (ws !== p.socket) out.entries(ws, res.appended, res.head);
        out.frame(p.socket, { t: FRAME.ack, id: p.id, acks: res.acks, head: res.head });
      } catch (e) {
        const err = toRelayError(e);
        out.frame(p.socket, errorFrame(err, p.id));
        if (err.code === "internal") p.socket.close(CLOSE.internal, "internal error");
      }
    }
    out.flush();
    if (head !== undefined) this.askForSnapshot(head);
  }

  /**
   * Every SNAPSHOT_EVERY entries, ask the connected replicas (after the
   * entries they were just sent) for a snapshot at the head: one that may
   * upload builds it, the others report their hash, each only if it is at
   * that seq with nothing pending. Not asked again before another
   * SNAPSHOT_EVERY entries (in memory: an evicted object may ask once more).
   */
  private askForSnapshot(head: number): void {
    const role = snapshotDue(this.sql, this.env, head, this.asked);
    if (!role) return;
    this.asked = head;
    const subs = this.subscribers();
    const builder = subs.find((ws) => roleAtLeast((ws.deserializeAttachment() as SocketInfo).role, role));
    for (const ws of subs) send(ws, { t: FRAME.snapshot, seq: head, build: ws === builder });
  }

  /**
   * The client id must be the caller's (identity.ts), for schema versions as
   * for data: both are recorded under the client and the sub. Then the log's
   * own rules.
   */
  private append(client: string, entries: PushEntry[], caller: Caller, now: number, knownHead?: number, schema: SchemaVersion[] = [], tables?: TableHeader[][]) {
    bindClient(this.sql, client, caller, now);
    const opts = { schema, mayChangeSchema: this.mayChangeSchema(caller.role), shapes: this.shapes, sub: caller.sub, tables };
    return store.push(this.sql, client, entries, now, knownHead, opts);
  }

  /** One push in one storage transaction; a refusal also forgets shapes the rolled-back transaction may have read. */
  private guarded<T>(fn: () => T): T {
    try {
      return this.ctx.storage.transactionSync(fn);
    } catch (e) {
      this.shapes.clear();
      throw e;
    }
  }

  /** SCHEMA_ROLE (default "write"): the role a token needs to add a schema version. */
  private mayChangeSchema(role: Role): boolean {
    const need = ROLES.includes(this.env.SCHEMA_ROLE as Role) ? (this.env.SCHEMA_ROLE as Role) : "write";
    return roleAtLeast(role, need);
  }

  /** Subscribed sockets whose token still holds; expired ones are closed here, so no entry reaches them. */
  private subscribers(): WebSocket[] {
    return this.ctx.getWebSockets().filter((ws) => {
      const info = ws.deserializeAttachment() as SocketInfo | null;
      return info?.subscribed && !this.expired(ws, info);
    });
  }

  /**
   * Close a socket whose token has run out: an `unauthorized` error frame,
   * then 1008. The client fetches a new token and reconnects from its cursor.
   */
  private expired(ws: WebSocket, info: SocketInfo, now = Date.now()): boolean {
    if (info.until === null || now < info.until) return false;
    try {
      send(ws, errorFrame(new RelayError("unauthorized", "invalid token: expired"), undefined));
      ws.close(CLOSE.expired, "token expired");
    } catch {
      // already closing
    }
    return true;
  }

  /** An alarm at the earliest token expiry of an open socket: sockets close on time even when idle (and hibernated). */
  private async wakeAt(until: number): Promise<void> {
    const current = await this.ctx.storage.getAlarm();
    if (current === null || until < current) await this.ctx.storage.setAlarm(until);
  }

  override async alarm(): Promise<void> {
    const now = Date.now();
    let next = Infinity;
    for (const ws of this.ctx.getWebSockets()) {
      const info = ws.deserializeAttachment() as SocketInfo | null;
      if (!info || this.expired(ws, info, now) || info.until === null) continue;
      next = Math.min(next, info.until);
    }
    if (next !== Infinity) await this.ctx.storage.setAlarm(next);
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
      // Every message, reports of reading included: past its token, a socket only gets closed.
      if (this.expired(ws, info)) return;
      if (frame.t === FRAME.got) return noteGot(ws, frame.bytes);
      if (frame.t === FRAME.sub) {
        this.drain(); // the backlog must include pushes that arrived before
        ws.serializeAttachment({ ...info, subscribed: true } satisfies SocketInfo);
        // An entry too large for a frame is listed by size, not read: framesFor turns it into a head frame.
        const page = store.pull(this.sql, frame.after, SOCKET_BACKLOG_ENTRIES, FRAME_ENTRY_BUDGET, FRAME_ENTRY_BUDGET);
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
      const who = admittedAs(frame.client, info);
      this.admission.admit(who, frame.entries.length, frame.entries.reduce((n, e) => n + e.changeset.byteLength, 0));
      let first: boolean;
      try {
        first = this.queue.add({ socket: ws, id: frame.id, client: frame.client, entries: frame.entries });
      } catch (e) {
        // Refused by the full queue: this client's later pushes must not overtake this one (admission.ts).
        this.admission.refuse(who, toRelayError(e).retryAfterMs ?? 0);
        throw e;
      }
      if (first) setTimeout(() => this.drain(), 0);
    } catch (e) {
      const err = toRelayError(e);
      send(ws, errorFrame(err, id));
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

/**
 * Whose bucket a push pays from (admission.ts): the client id as used by
 * this sub. Admission runs before the client → sub binding is checked
 * (identity.ts, in the push's transaction), so a bucket keyed by client id
 * alone could be emptied by anyone pushing under another's id.
 */
function admittedAs(client: string, caller: Pick<Caller, "sub">): string {
  return `${client} of ${caller.sub}`;
}

/** The claims of a verified upgrade ride in one header, written and read only here; the object has no route of its own. */
const CLAIMS_HEADER = "x-relay-claims";

export function subscribeRequest(claims: Pick<TokenClaims, "role" | "sub" | "exp">): Request {
  const until = expiresAt(claims);
  const info = { role: claims.role, sub: claims.sub, until: until === Infinity ? null : until };
  return new Request("https://log/subscribe", { headers: { upgrade: "websocket", [CLAIMS_HEADER]: JSON.stringify(info) } });
}

function claimsOf(request: Request): { role: Role; sub: string; until: number | null } {
  const c = JSON.parse(request.headers.get(CLAIMS_HEADER) ?? "null") as { role?: unknown; sub?: unknown; until?: unknown } | null;
  const until = c?.until ?? null;
  if (!ROLES.includes(c?.role as Role) || !isName(c?.sub) || !(until === null || typeof until === "number")) {
    throw new RelayError("internal", "socket upgrade without verified claims");
  }
  return { role: c!.role as Role, sub: c!.sub as string, until };
}

function errorFrame(err: RelayError, id: number | undefined): RelayFrame {
  return {
    t: FRAME.error,
    ...(id === undefined ? {} : { id }),
    error: { code: err.code, message: err.message },
    ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: err.retryAfterMs }),
  };
}
