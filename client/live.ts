import { RelayError } from "./errors.ts";
import { FRAME, FRAME_ENTRY_BUDGET, type RelayFrame } from "../protocol/frames.ts";
import { MAX_ENTRIES_PER_PUSH } from "../protocol/limits.ts";
import type { Ack, PushEntry } from "../protocol/messages.ts";
import type { BackoffOptions } from "./backoff.ts";
import type { Driver } from "./drivers/types.ts";
import type { Emitter } from "./events.ts";
import * as outbox from "./outbox.ts";
import type { SyncDelegate, SyncLoop } from "./sync-loop.ts";
import type { TokenSource } from "./token.ts";
import { LiveSocket, socketUrl } from "./transport/socket.ts";
import type { ReplicaEvents, ReplicaOptions } from "./types.ts";

/**
 * Live sync over the socket: subscribe from the cursor, push each commit as
 * it happens (coalescing bursts into frames), apply others' entries as they
 * arrive and our own acknowledged ones from the outbox. What the socket
 * cannot do (a gap, an entry too large for a frame, a refused push) it hands
 * to the sync loop.
 */

/** How long a live write may wait for the next one to share its frame (only right after a send). */
const COALESCE_MS = 1;
/** Why a held frame's wait ends early: it went out with a later write. */
const SENT_MEANWHILE = new Error("sent meanwhile");

export type LiveDelegate = Pick<SyncDelegate, "locked" | "cursor" | "page" | "acked" | "now" | "sleep" | "schemaAhead"> & {
  readonly d: Driver;
  isClosed(): boolean;
  /** An error of a background step: reported, and live sync stops if it is final. */
  fail(e: unknown): void;
  /** The relay asks for a snapshot (or this replica's hash) at `seq` (snapshot frames). */
  snapshotAsked(seq: number, build: boolean): void;
};

export class Live {
  private socket: LiveSocket | undefined;
  /** Highest cseq sent over the current socket; reset on reconnect so unconfirmed entries are re-sent. */
  private flushedUpTo = 0;
  /** Live writes waiting to go out together (the cseqs right after flushedUpTo); see send. */
  private held: PushEntry[] = [];
  private heldBytes = 0;
  private heldWait: AbortController | undefined;
  private lastSent = -Infinity;
  /** After an `overloaded` refusal: no live pushes until the relay's wait is over (see pause). */
  private paused: AbortController | undefined;
  private nextFrameId = 1;
  /** Acks received and not yet applied: those of one network read are applied in one step. */
  private acks: Ack[] = [];
  private readonly delegate: LiveDelegate;
  private readonly loop: SyncLoop;
  private readonly events: Emitter<ReplicaEvents>;
  private readonly opts: ReplicaOptions;
  private readonly clientId: string;
  private readonly readOnly: boolean;
  private readonly backoff: BackoffOptions;
  private readonly tokens: TokenSource;

  constructor(
    delegate: LiveDelegate,
    loop: SyncLoop,
    events: Emitter<ReplicaEvents>,
    opts: ReplicaOptions,
    ids: { clientId: string; readOnly: boolean; backoff: BackoffOptions; tokens: TokenSource },
  ) {
    this.delegate = delegate;
    this.loop = loop;
    this.events = events;
    this.opts = opts;
    this.clientId = ids.clientId;
    this.readOnly = ids.readOnly;
    this.backoff = ids.backoff;
    this.tokens = ids.tokens;
  }

  /** Switched on (it may still be connecting). */
  get on(): boolean {
    return this.socket !== undefined;
  }

  get connected(): boolean {
    return this.socket?.connected ?? false;
  }

  start(): void {
    if (this.socket) return;
    this.socket = new LiveSocket(
      {
        // Asked on every connection: a reconnect carries the newest token.
        url: async () => socketUrl(this.opts.url, this.opts.db, await this.tokens.fresh()),
        backoff: { ...this.backoff, maxAttempts: Infinity },
        ...(this.opts.heartbeatMs === undefined ? {} : { heartbeatMs: this.opts.heartbeatMs }),
        ...(this.opts.createWebSocket ? { createWebSocket: this.opts.createWebSocket } : {}),
      },
      {
        opened: (send) => {
          this.flushedUpTo = 0;
          this.dropHeld();
          if (!this.moving) this.events.emit("connection", { connected: true, live: true });
          this.moving = false;
          send({ t: FRAME.sub, after: this.delegate.cursor() });
          this.flush();
        },
        frame: (f) => this.onFrame(f),
        closed: (attempt) => {
          if (attempt === 0 && !this.moving) this.events.emit("connection", { connected: false, live: this.socket !== undefined });
          if (attempt > 0 && this.moving) {
            // The new connection failed: now it is a disconnection after all.
            this.moving = false;
            this.events.emit("connection", { connected: false, live: this.socket !== undefined });
          }
          // The handshake cannot tell us why it failed (browsers hide the
          // status): an HTTP sync surfaces auth errors, and fatal ones stop
          // live sync instead of retrying forever.
          if (attempt >= 2) this.loop.request();
        },
      },
    );
    this.socket.start();
  }

  /** Returns whether it was on. */
  stop(): boolean {
    const socket = this.socket;
    if (!socket) return false;
    this.socket = undefined;
    socket.stop();
    this.dropHeld();
    this.paused?.abort();
    this.paused = undefined;
    return true;
  }

  /** Set while moving to a new token: that drop is not a disconnection to report. */
  private moving = false;

  /** A new token: connect again with it (from the cursor; pending entries are sent again), before the relay closes the old socket at its expiry. */
  reconnect(): void {
    if (!this.connected) return;
    this.moving = true;
    this.socket?.interrupt();
  }

  /** Asked by capture before COMMIT: every earlier entry went out on this connection, so this one can follow at once. */
  sendsAtOnce(entry: PushEntry): boolean {
    return this.connected && !this.loop.blocked && !this.paused && this.flushedUpTo + this.held.length === entry.cseq - 1 && entry.changeset.byteLength <= FRAME_ENTRY_BUDGET && !this.delegate.schemaAhead();
  }

  /**
   * A live write goes out at once, unless another one went out less than
   * COALESCE_MS ago: then it waits for the next write or COALESCE_MS,
   * whichever comes first. A burst of writes thus travels as a frame or so per
   * millisecond instead of one per write, and each frame is what costs the
   * relay (a dispatch, a decode, a storage call) and the subscribers (an apply
   * step). The first write after a pause is never held. Under the local lock.
   */
  send(entry: PushEntry): void {
    if (this.heldBytes + entry.changeset.byteLength > FRAME_ENTRY_BUDGET) this.sendHeld();
    this.held.push(entry);
    this.heldBytes += entry.changeset.byteLength;
    if (this.delegate.now() - this.lastSent >= COALESCE_MS || this.held.length >= MAX_ENTRIES_PER_PUSH) return this.sendHeld();
    if (this.heldWait) return;
    const wait = (this.heldWait = new AbortController());
    this.delegate.sleep(COALESCE_MS, wait.signal).then(
      () => {
        this.heldWait = undefined;
        this.delegate.locked(() => this.sendHeld()).catch((e) => this.delegate.fail(e));
      },
      () => undefined, // sent meanwhile
    );
  }

  /**
   * Send pending entries not yet sent on this connection; large ones go over
   * HTTP. Under the local lock, so marking entries sent never lands inside a
   * user's open transaction.
   */
  flush(): void {
    if (!this.connected || this.delegate.isClosed() || this.readOnly || this.paused) return;
    this.delegate.locked(() => this.flushNow()).catch((e) => this.delegate.fail(e));
  }

  private sendHeld(): void {
    const batch = this.held;
    this.dropHeld();
    if (batch.length === 0 || !this.connected || this.delegate.isClosed()) return;
    this.lastSent = this.delegate.now();
    // They are marked sent already; if the socket just closed, the reconnect's flush sends them.
    if (this.sendFrame(batch)) this.flushedUpTo = batch.at(-1)!.cseq;
  }

  private dropHeld(): void {
    this.held = [];
    this.heldBytes = 0;
    // With a reason: abort() without one builds a DOMException (~5 µs, a held frame's every send).
    this.heldWait?.abort(SENT_MEANWHILE);
    this.heldWait = undefined;
  }

  private sendFrame(entries: PushEntry[]): boolean {
    return this.socket?.send({ t: FRAME.push, id: this.nextFrameId++, client: this.clientId, entries }) ?? false;
  }

  private flushNow(): void {
    // Held entries wait for sync() or a new token (SyncLoop.blocked); others' entries still arrive.
    if (!this.connected || this.delegate.isClosed() || this.loop.blocked) return;
    this.sendHeld(); // they come first, and must not go out twice
    // Schema versions the log lacks go over HTTP, ahead of what needs them.
    if (this.delegate.schemaAhead()) return this.loop.request();
    const d = this.delegate.d;
    // Entries too large for a frame stay in the database (read only by their HTTP push).
    const entries = outbox.entriesAfter(d, this.flushedUpTo, MAX_ENTRIES_PER_PUSH, FRAME_ENTRY_BUDGET);
    for (let rest = entries; rest.length > 0; ) {
      const batch = outbox.batchByBytes(rest, FRAME_ENTRY_BUDGET);
      // Too large for any frame: HTTP pushes it and what follows.
      if (outbox.sizeOf(batch[0]!) > FRAME_ENTRY_BUDGET) return this.loop.request();
      outbox.markSent(d, batch[0]!.cseq, batch.at(-1)!.cseq);
      if (!this.sendFrame(batch)) return;
      this.flushedUpTo = batch.at(-1)!.cseq;
      rest = rest.slice(batch.length);
    }
    if (entries.length === MAX_ENTRIES_PER_PUSH) queueMicrotask(() => this.flush());
  }

  private onFrame(f: RelayFrame): void {
    if (this.delegate.isClosed()) return;
    if (f.t === FRAME.snapshot) return this.delegate.snapshotAsked(f.seq, f.build);
    if (f.t !== FRAME.error) this.loop.seen(f.head);
    switch (f.t) {
      case FRAME.entries:
        this.applyAcks(); // log order: acks that came first go first
        this.step(this.delegate.page(f.entries), { pushed: 0, pulled: f.entries.length });
        return;
      case FRAME.head:
        if (f.head > this.delegate.cursor()) this.loop.request();
        return;
      case FRAME.ack:
        // A fast writer gets acks in bursts (many in one network read, all
        // dispatched before microtasks run): one local transaction for all.
        if (this.acks.length === 0) queueMicrotask(() => this.applyAcks());
        for (const a of f.acks) this.acks.push(a);
        return;
      case FRAME.error: {
        const err = new RelayError(f.error.code, f.error.message, f.retryAfterMs === undefined ? undefined : { retryAfterMs: f.retryAfterMs });
        if (f.id !== undefined) {
          // A refused push stays pending. Overloaded: no live push until the
          // relay's wait is over. Otherwise retryable: an HTTP sync retries it
          // soon. Otherwise an HTTP sync at once: `schema_outdated` is routine
          // there (its pull migrates and translates, and it pushes again); a
          // final refusal is held as `blocked`, reported naming the entry,
          // and pulls go on.
          if (!err.retryable) return this.loop.request();
          this.events.emit("error", err);
          if (err.code === "overloaded") return this.pause(Math.max(this.backoff.baseMs, f.retryAfterMs ?? 0));
          this.loop.retryLater(this.backoff.baseMs);
          return;
        }
        // The relay closes a socket whose token expired (1008 follows): with a
        // token function that is routine, and the reconnect asks it for a new one.
        if (err.code === "unauthorized" && this.tokens.refreshable) return void this.tokens.refresh();
        // Behind the compacted log: the HTTP sync resets onto the snapshot.
        if (err.code === "snapshot_required") return this.loop.request();
        this.events.emit("error", err);
        return;
      }
    }
  }

  /**
   * The relay is overloaded and asked for a wait: send nothing live until it
   * is over, then resend every pending entry from the first, as after a
   * reconnect. The relay refuses this client's pushes until then, including
   * those already on the way, so no later cseq lands before a refused one.
   */
  private pause(ms: number): void {
    if (this.paused) return;
    const wait = (this.paused = new AbortController());
    this.dropHeld();
    this.delegate.sleep(ms, wait.signal).then(
      () => {
        this.paused = undefined;
        this.flushedUpTo = 0;
        this.flush();
      },
      () => undefined, // stopped
    );
  }

  private applyAcks(): void {
    if (this.acks.length === 0) return;
    const acks = this.acks;
    this.acks = [];
    this.step(this.delegate.acked(acks), { pushed: acks.length, pulled: 0 });
  }

  /** A step's outcome: a gap asks the loop to pull; otherwise "sync" (also when only our own entries came back: pending went down). */
  private step(applied: Promise<boolean>, counts: { pushed: number; pulled: number }): void {
    applied.then(
      (inOrder) => {
        if (!inOrder) return this.loop.request();
        this.events.emit("sync", { ...counts, cursor: this.delegate.cursor(), head: this.loop.head });
      },
      (e) => this.delegate.fail(e),
    );
  }
}
