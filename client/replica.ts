import { asRelayError, RelayError } from "../protocol/errors.ts";
import { validateChangeset } from "../protocol/changeset.ts";
import { MAX_ENTRIES_PER_PUSH, PULL_BYTE_BUDGET } from "../protocol/limits.ts";
import type { PushEntry } from "../protocol/messages.ts";
import { SchemaCache } from "./apply.ts";
import { DEFAULT_BACKOFF, withRetry, type BackoffOptions } from "./backoff.ts";
import type { ConflictRecord } from "./conflicts.ts";
import type { Driver, Params, Row } from "./drivers/types.ts";
import { Emitter, Mutex } from "./events.ts";
import { rebase } from "./rebase.ts";
import * as store from "./store.ts";
import { httpTransport, type Transport } from "./transport/http.ts";
import { LiveSocket, socketUrl } from "./transport/socket.ts";
import type { ChangeEvent, ReplicaEvents, ReplicaOptions, ReplicaStatus, SyncEvent, Tx } from "./types.ts";
import { FRAME, FRAME_ENTRY_BUDGET, type RelayFrame } from "../protocol/frames.ts";
import type { Ack, LogEntry } from "../protocol/messages.ts";

export type { ChangeEvent, ReplicaEvents, ReplicaOptions, ReplicaStatus, SyncEvent, Tx } from "./types.ts";

/** How long a live write may wait for the next one to share its frame (only right after a send). */
const COALESCE_MS = 1;

/** Bytes of changesets per push request; well under the relay's 32 MiB default body limit. */
const PUSH_BYTE_BUDGET = PULL_BYTE_BUDGET;

export class Replica {
  readonly clientId: string;
  private readonly d: Driver;
  private readonly transport: Transport;
  private readonly opts: ReplicaOptions;
  private readonly backoff: BackoffOptions;
  private readonly readOnly: boolean;
  private readonly events = new Emitter<ReplicaEvents>();
  /** Serialises every local transaction: user writes and sync steps. */
  private readonly local = new Mutex();
  /** Serialises sync runs. */
  private readonly syncs = new Mutex();
  private readonly schema: SchemaCache;
  /** The schema version `schema` was read at. */
  private schemaVersion = -1;
  private readonly fk: boolean;
  private head = 0;
  private closed = false;
  private readonly stopping = new AbortController();
  private live: LiveSocket | undefined;
  /** Highest cseq sent over the current socket; reset on reconnect so unconfirmed entries are re-sent. */
  private flushedUpTo = 0;
  /** Live writes waiting to go out together (the cseqs right after flushedUpTo); see sendLive. */
  private held: PushEntry[] = [];
  private heldBytes = 0;
  private heldTimer: ReturnType<typeof setTimeout> | undefined;
  private lastSent = -Infinity;
  private nextFrameId = 1;
  /** Background sync requested while one runs: run once more after it. */
  private syncWanted = false;
  private syncRunning = false;
  /** Acks received and not yet applied: those of one network read are applied in one step. */
  private acked: Ack[] = [];

  /** Use `openReplica`. */
  constructor(d: Driver, clientId: string, opts: ReplicaOptions, readOnly: boolean) {
    this.d = d;
    this.clientId = clientId;
    this.opts = opts;
    this.readOnly = readOnly;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.transport = opts.transport ?? httpTransport({
      url: opts.url,
      db: opts.db,
      token: opts.token,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.requestTimeoutMs === undefined ? {} : { timeoutMs: opts.requestTimeoutMs }),
    });
    this.schema = new SchemaCache(d);
    this.fk = d.all("PRAGMA foreign_keys")[0]?.foreign_keys === 1;
  }

  /** Run one write transaction (one or more statements); it becomes one changeset. */
  exec(sql: string, params?: Params): Promise<{ changes: number }> {
    return this.transaction((tx) => tx.exec(sql, params));
  }

  /**
   * Run `fn` as one local write transaction, captured as exactly one
   * changeset and queued for the relay in the same SQLite transaction.
   * A throw rolls everything back. Use `tx`, not the replica, inside `fn`.
   */
  transaction<T>(fn: (tx: Tx) => Promise<T> | T): Promise<T> {
    return this.local.run(async () => {
      this.assertOpen();
      if (this.readOnly) throw new RelayError("read_only", "this replica is read-only (its token's role is read): local writes are refused");
      const d = this.d;
      d.exec("BEGIN IMMEDIATE");
      const schema = store.schemaVersion(d);
      const session = d.session();
      let done = false;
      const tx: Tx = {
        exec: async (sql, params) => {
          if (done) throw new RelayError("closed", "transaction already finished");
          // The driver counts the rows from the statement itself: no query for it.
          return { changes: d.run(sql, params).changes };
        },
        query: async <R extends Row>(sql: string, params?: Params) => {
          if (done) throw new RelayError("closed", "transaction already finished");
          return plain<R>(d.all(sql, params));
        },
      };
      try {
        const result = await fn(tx);
        done = true;
        if (store.schemaVersion(d) !== schema) {
          throw new RelayError("ddl_outside_schema", "schema changes must go through the `schema` option: DDL is not replicated");
        }
        const changeset = session.changeset();
        session.close();
        const cseq = this.nextCseq();
        // Live, with every earlier entry already sent on this connection: this
        // one goes out right after COMMIT, so it is marked sent in the same
        // transaction. That spares the flush its query, its second write
        // (a second commit, an fsync on a file database) and a turn of the lock.
        const direct = this.live?.connected === true && this.flushedUpTo + this.held.length === cseq - 1 && changeset.byteLength <= FRAME_ENTRY_BUDGET;
        if (changeset.byteLength > 0) {
          // The codec refuses what the relay would refuse (internal tables,
          // changesets SQLite cannot apply): better now than at push time.
          validateChangeset(changeset);
          store.enqueue(d, cseq, changeset, direct);
        }
        d.exec("COMMIT");
        if (changeset.byteLength > 0) {
          this.meta.lastCseq = cseq;
          this.events.emit("change", { source: "local", cursor: this.cursor() });
          if (direct) this.sendLive({ cseq, changeset });
          else if (this.live) queueMicrotask(() => this.flush());
        }
        return result;
      } catch (e) {
        done = true;
        session.close();
        if (d.inTransaction) d.exec("ROLLBACK");
        throw e;
      }
    });
  }

  /** Read with SQL; rows as plain objects. Sees pending local writes. */
  query<T extends Row = Row>(sql: string, params?: Params): Promise<T[]> {
    return this.local.run(() => {
      this.assertOpen();
      return plain<T>(this.d.all(sql, params));
    });
  }

  /** Push everything pending, pull to the head of the log, rebase. Concurrent calls queue. */
  sync(signal?: AbortSignal): Promise<SyncEvent> {
    return this.syncs.run(async () => {
      this.assertOpen();
      // close() ends a sync in flight (a request, a backoff wait) rather than waiting it out.
      const stop = signal ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal;
      try {
        const pushed = this.readOnly ? 0 : await this.pushAll(stop);
        const pulled = await this.pullAll(stop);
        const ev: SyncEvent = { pushed, pulled, cursor: this.cursor(), head: this.head };
        this.events.emit("sync", ev);
        return ev;
      } catch (e) {
        const err = asRelayError(e);
        if (err.code !== "aborted") this.events.emit("error", err);
        throw err;
      }
    });
  }

  status(): ReplicaStatus {
    return {
      clientId: this.clientId,
      cursor: this.closed ? 0 : this.cursor(),
      head: this.head,
      pending: this.closed ? 0 : store.pendingCount(this.d),
      connected: this.live?.connected ?? false,
      live: this.live !== undefined,
      driver: this.d.kind,
      readOnly: this.readOnly,
    };
  }

  on<K extends keyof ReplicaEvents>(event: K, fn: (e: ReplicaEvents[K]) => void): () => void {
    return this.events.on(event, fn);
  }

  /** Conflicts recorded so far, oldest first. */
  conflicts(): Promise<ConflictRecord[]> {
    return this.local.run(() => {
      this.assertOpen();
      return store.readConflicts(this.d);
    });
  }

  /**
   * Turn live sync on or off. Off closes the socket and stops all automatic
   * syncing (an app's "offline" switch); local writes keep queueing. On
   * reconnects, resumes from the cursor and pushes what is pending.
   */
  setLive(enabled: boolean): void {
    this.assertOpen();
    if (!enabled) {
      const live = this.live;
      if (!live) return;
      this.live = undefined;
      live.stop();
      // stop() reports a drop only from an open socket; say once that live is off.
      this.events.emit("connection", { connected: false, live: false });
      return;
    }
    if (this.live) return;
    this.live = new LiveSocket(
      {
        url: socketUrl(this.opts.url, this.opts.db, this.opts.token),
        backoff: { ...this.backoff, maxAttempts: Infinity },
        ...(this.opts.heartbeatMs === undefined ? {} : { heartbeatMs: this.opts.heartbeatMs }),
        ...(this.opts.createWebSocket ? { createWebSocket: this.opts.createWebSocket } : {}),
      },
      {
        opened: (send) => {
          this.flushedUpTo = 0;
          this.dropHeld();
          this.events.emit("connection", { connected: true, live: true });
          send({ t: FRAME.sub, after: this.cursor() });
          this.flush();
        },
        frame: (f) => this.onFrame(f),
        closed: (attempt) => {
          if (attempt === 0) this.events.emit("connection", { connected: false, live: this.live !== undefined });
          // The handshake cannot tell us why it failed (browsers hide the
          // status): an HTTP sync surfaces auth errors, and fatal ones stop
          // live sync instead of retrying forever.
          if (attempt >= 2) this.requestSync();
        },
      },
    );
    this.live.start();
  }

  /**
   * Live: send pending entries not yet sent on this connection; large ones go
   * over HTTP. Under the local lock, so marking entries sent never lands
   * inside a user's open transaction.
   */
  private flush(): void {
    if (!this.live?.connected || this.closed || this.readOnly) return;
    this.local.run(() => this.flushNow()).catch((e) => this.fail(e));
  }

  /**
   * A live write goes out at once, unless another one went out less than
   * COALESCE_MS ago: then it waits for the next write or COALESCE_MS,
   * whichever comes first. A burst of writes thus travels as a frame or so per
   * millisecond instead of one per write, and each frame is what costs the
   * relay (a dispatch, a decode, a storage call) and the subscribers (an apply
   * step). The first write after a pause is never held. Under the local lock.
   */
  private sendLive(entry: PushEntry): void {
    if (this.heldBytes + entry.changeset.byteLength > FRAME_ENTRY_BUDGET) this.sendHeld();
    this.held.push(entry);
    this.heldBytes += entry.changeset.byteLength;
    if (performance.now() - this.lastSent >= COALESCE_MS || this.held.length >= MAX_ENTRIES_PER_PUSH) return this.sendHeld();
    this.heldTimer ??= setTimeout(() => {
      this.heldTimer = undefined;
      this.local.run(() => this.sendHeld()).catch((e) => this.fail(e));
    }, COALESCE_MS);
  }

  private sendHeld(): void {
    const batch = this.held;
    this.dropHeld();
    if (batch.length === 0 || !this.live?.connected || this.closed) return;
    this.lastSent = performance.now();
    // They are marked sent already; if the socket just closed, the reconnect's flush sends them.
    if (this.live.send({ t: FRAME.push, id: this.nextFrameId++, client: this.clientId, entries: batch })) this.flushedUpTo = batch.at(-1)!.cseq;
  }

  private dropHeld(): void {
    this.held = [];
    this.heldBytes = 0;
    clearTimeout(this.heldTimer);
    this.heldTimer = undefined;
  }

  private flushNow(): void {
    if (!this.live?.connected || this.closed) return;
    this.sendHeld(); // they come first, and must not go out twice
    const rows = this.d.all("SELECT cseq, changeset FROM _relay_outbox WHERE cseq > ? ORDER BY cseq LIMIT ?", [this.flushedUpTo, MAX_ENTRIES_PER_PUSH]);
    let batch: PushEntry[] = [];
    let bytes = 0;
    const sendBatch = () => {
      if (batch.length === 0) return true;
      store.markSent(this.d, batch[0]!.cseq, batch.at(-1)!.cseq);
      if (!this.live?.send({ t: FRAME.push, id: this.nextFrameId++, client: this.clientId, entries: batch })) return false;
      this.flushedUpTo = batch.at(-1)!.cseq;
      batch = [];
      bytes = 0;
      return true;
    };
    for (const r of rows) {
      const cs = r.changeset as Uint8Array;
      if (cs.byteLength > FRAME_ENTRY_BUDGET) {
        sendBatch();
        return this.requestSync();
      }
      if (bytes + cs.byteLength > FRAME_ENTRY_BUDGET && !sendBatch()) return;
      batch.push({ cseq: r.cseq as number, changeset: cs });
      bytes += cs.byteLength;
    }
    sendBatch();
    if (rows.length === MAX_ENTRIES_PER_PUSH) queueMicrotask(() => this.flush());
  }

  private onFrame(f: RelayFrame): void {
    if (this.closed) return;
    switch (f.t) {
      case FRAME.entries:
        this.head = Math.max(this.head, f.head);
        this.applyAcks(); // log order: acks that came first go first
        this.applyPage(f.entries).then(
          (inOrder) => {
            if (!inOrder) return this.requestSync();
            // Also when only our own entries came back: pending went down.
            this.events.emit("sync", { pushed: 0, pulled: f.entries.length, cursor: this.cursor(), head: this.head });
          },
          (e) => this.fail(e),
        );
        return;
      case FRAME.head:
        this.head = Math.max(this.head, f.head);
        if (f.head > this.cursor()) this.requestSync();
        return;
      case FRAME.ack:
        this.head = Math.max(this.head, f.head);
        // A fast writer gets acks in bursts (many in one network read, all
        // dispatched before microtasks run): one local transaction for all.
        if (this.acked.length === 0) queueMicrotask(() => this.applyAcks());
        for (const a of f.acks) this.acked.push(a);
        return;
      case FRAME.error: {
        const err = new RelayError(f.error.code, f.error.message);
        this.events.emit("error", err);
        // A refused push stays pending; an HTTP sync retries it and reports
        // for good if the refusal is final.
        if (f.id !== undefined && err.retryable) setTimeout(() => this.requestSync(), this.backoff.baseMs);
        return;
      }
    }
  }

  private applyAcks(): void {
    if (this.acked.length === 0) return;
    const acks = this.acked;
    this.acked = [];
    this.applyAcked(acks).then(
      (inOrder) => {
        if (!inOrder) return this.requestSync();
        this.events.emit("sync", { pushed: acks.length, pulled: 0, cursor: this.cursor(), head: this.head });
      },
      (e) => this.fail(e),
    );
  }

  /** Run a background sync soon; coalesces requests. Errors become "error" events, never unhandled rejections. */
  private requestSync(): void {
    if (this.closed) return;
    if (this.syncRunning) {
      this.syncWanted = true;
      return;
    }
    this.syncRunning = true;
    this.sync().then(
      () => this.afterBackgroundSync(),
      (e: unknown) => {
        if (e instanceof RelayError && !e.retryable && e.code !== "closed" && e.code !== "aborted") this.setLiveOffAfterFatal();
        this.afterBackgroundSync();
      },
    );
  }

  private afterBackgroundSync(): void {
    this.syncRunning = false;
    if (this.syncWanted && !this.closed) {
      this.syncWanted = false;
      this.requestSync();
    }
  }

  private setLiveOffAfterFatal(): void {
    if (this.live && !this.closed) this.setLive(false);
  }

  private fail(e: unknown): void {
    const err = asRelayError(e);
    if (err.code === "closed") return;
    this.events.emit("error", err);
    if (!err.retryable) this.setLiveOffAfterFatal();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.stopping.abort();
    this.live?.stop();
    this.live = undefined;
    await this.syncs.run(() => undefined);
    await this.local.run(() => {
      this.closed = true;
      this.d.close();
    });
  }

  private assertOpen(): void {
    if (this.closed) throw new RelayError("closed", "replica is closed");
  }

  /**
   * `cursor` and `last_cseq` as last read from _relay_meta. Only this
   * replica's own steps change them, under the local lock: a sync step
   * (applyNow drops the copy) and a capture (transaction updates it after its
   * COMMIT). Saves two queries per local write.
   */
  private meta: { cursor?: number; lastCseq?: number } = {};

  private cursor(): number {
    return (this.meta.cursor ??= Number(store.getMeta(this.d, "cursor") ?? 0));
  }

  private nextCseq(): number {
    return (this.meta.lastCseq ??= Number(store.getMeta(this.d, "last_cseq") ?? 0)) + 1;
  }

  private async pushAll(signal?: AbortSignal): Promise<number> {
    let pushed = 0;
    let after = 0;
    const acks: Ack[] = [];
    for (;;) {
      const batch: PushEntry[] = await this.local.run(() => {
        const rows = this.d.all("SELECT cseq, changeset FROM _relay_outbox WHERE cseq > ? ORDER BY cseq LIMIT ?", [after, MAX_ENTRIES_PER_PUSH]);
        const out: PushEntry[] = [];
        let bytes = 0;
        for (const r of rows) {
          const cs = r.changeset as Uint8Array;
          if (out.length > 0 && bytes + cs.byteLength > PUSH_BYTE_BUDGET) break;
          out.push({ cseq: r.cseq as number, changeset: cs });
          bytes += cs.byteLength;
        }
        // Marked before sending: a sent entry's bytes are fixed, because the
        // relay may have stored them even if we never hear back.
        if (out.length > 0) store.markSent(this.d, out[0]!.cseq, out.at(-1)!.cseq);
        return out;
      });
      if (batch.length === 0) {
        // Our own entries need not come back down in the pull that follows.
        if (acks.length > 0) await this.applyAcked(acks);
        return pushed;
      }
      const res = await withRetry(() => this.transport.push(this.clientId, batch, signal), this.backoff, signal);
      this.head = Math.max(this.head, res.head);
      acks.push(...res.acks);
      pushed += batch.length;
      after = batch.at(-1)!.cseq;
    }
  }

  private async pullAll(signal?: AbortSignal): Promise<number> {
    let pulled = 0;
    for (;;) {
      const after = await this.local.run(() => this.cursor());
      const page = await withRetry(() => this.transport.pull(after, undefined, signal), this.backoff, signal);
      this.head = Math.max(this.head, page.head);
      if (page.entries.length > 0) {
        if (page.entries[0]!.seq !== after + 1) throw new RelayError("internal", `relay skipped from ${after} to ${page.entries[0]!.seq}`);
        // false only if the socket applied past us meanwhile: ask again from the new cursor.
        await this.applyPage(page.entries);
        pulled += page.entries.length;
      }
      if (!page.more) return pulled;
    }
  }

  /**
   * One sync step: one local transaction over consecutive log entries. Pages
   * from HTTP and frames from the socket both land here; entries already
   * applied are skipped, and a gap returns false (the caller pulls instead).
   */
  private applyPage(page: readonly LogEntry[]): Promise<boolean> {
    return this.local.run(() => this.applyNow(page));
  }

  /**
   * Own entries the relay acknowledged, applied from the outbox instead of
   * being downloaded again (the relay does not echo a socket's pushes back to
   * it, and a 100,000-row push would otherwise come straight back down). The
   * ack proves the log holds exactly these bytes at these seqs: a sent
   * entry's bytes never change, and the relay refuses other bytes for a
   * (client, cseq) it holds. The same step as a pulled page; false when they
   * do not directly follow the cursor (foreign entries first: pull instead).
   */
  private applyAcked(acks: readonly Ack[]): Promise<boolean> {
    return this.local.run(() => {
      if (this.closed) return true;
      const cursor = this.cursor();
      const fresh = acks.filter((a) => a.seq > cursor);
      if (fresh.length === 0) return true;
      const rows = this.d.all("SELECT cseq, changeset FROM _relay_outbox WHERE cseq >= ? AND cseq <= ?", [fresh[0]!.cseq, fresh.at(-1)!.cseq]);
      const bytes = new Map(rows.map((r) => [r.cseq as number, r.changeset as Uint8Array]));
      const entries: LogEntry[] = [];
      for (const a of fresh) {
        const changeset = bytes.get(a.cseq);
        if (!changeset || (entries.length > 0 && a.seq !== entries.at(-1)!.seq + 1)) break;
        entries.push({ seq: a.seq, client: this.clientId, cseq: a.cseq, changeset, ts: 0 });
      }
      return entries.length === fresh.length && this.applyNow(entries);
    });
  }

  /** applyPage's body, under the local lock. */
  private applyNow(page: readonly LogEntry[]): boolean {
    if (this.closed) return true;
    const cursor = this.cursor();
    const entries = page.filter((e) => e.seq > cursor);
    if (entries.length === 0) return true;
    if (entries[0]!.seq !== cursor + 1) return false;
    const d = this.d;
    // Replicated state may legitimately break a foreign key (a child row
    // inserted concurrently with its parent's deletion): enforcing it mid-apply
    // would make SQLite refuse the commit on every replica, so it is relaxed
    // while log entries are applied. PRAGMA foreign_keys is a no-op inside a
    // transaction, hence outside BEGIN.
    if (this.fk) d.exec("PRAGMA foreign_keys = OFF");
    let result: ReturnType<typeof rebase>;
    try {
      d.exec("BEGIN IMMEDIATE");
      // Table definitions are read again only when the schema changed (DDL can
      // still come through query()): one PRAGMA per step instead of five
      // queries per table, which weighed on live steps of a few entries.
      const version = store.schemaVersion(d);
      if (version !== this.schemaVersion) this.schema.clear();
      this.schemaVersion = version;
      result = rebase(d, this.clientId, entries, this.opts.conflicts ?? {}, this.schema);
      for (const c of result.conflicts) store.recordConflict(d, c);
      d.exec("COMMIT");
    } catch (e) {
      if (d.inTransaction) d.exec("ROLLBACK");
      throw e;
    } finally {
      this.meta = {}; // rebase moved the cursor (and maybe last_cseq)
      if (this.fk) d.exec("PRAGMA foreign_keys = ON");
    }
    for (const c of result.conflicts) this.events.emit("conflict", c);
    if (result.applied > 0) this.events.emit("change", { source: "remote", cursor: entries.at(-1)!.seq });
    return true;
  }
}

/** Drivers hand out null-prototype rows (node:sqlite's shape); users get ordinary objects. */
function plain<T>(rows: Row[]): T[] {
  return rows.map((r) => ({ ...r }) as T);
}

