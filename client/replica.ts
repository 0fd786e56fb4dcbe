import { asRelayError, RelayError } from "./errors.ts";
import { MAX_ENTRIES_PER_PUSH } from "../protocol/limits.ts";
import { DEFAULT_BACKOFF, realClock } from "./backoff.ts";
import { capture, plain } from "./capture.ts";
import type { ConflictRecord } from "./conflicts.ts";
import type { Driver, Params, Row } from "./drivers/types.ts";
import { Emitter, Mutex } from "./events.ts";
import type { FileLock } from "./file-lock.ts";
import { RelayLimits } from "./limits.ts";
import { Live, type LiveDelegate } from "./live.ts";
import * as outbox from "./outbox.ts";
import { sha256Hex, type Snapshot } from "./snapshot.ts";
import { Step, type ReplicaSql } from "./step.ts";
import { snapshotClient, type SnapshotClient } from "./transport/snapshots.ts";
import * as store from "./store.ts";
import { PUSH_BYTE_BUDGET, SyncLoop, type SyncDelegate } from "./sync-loop.ts";
import type { TokenSource } from "./token.ts";
import { httpTransport, type Transport } from "./transport/http.ts";
import type { DivergenceEvent, DroppedEvent, ReplicaEvents, ReplicaOptions, ReplicaStatus, ReplicaWarning, SyncEvent, Tx } from "./types.ts";
import { Watches, type WatchOptions } from "./watch.ts";

export type { Snapshot } from "./snapshot.ts";
export type { ChangeEvent, ReplicaEvents, ReplicaOptions, ReplicaStatus, ReplicaWarning, SyncEvent, SyncProgress, Tx } from "./types.ts";
export type { WatchOptions } from "./watch.ts";

/** Events raised while opening (openReplica): schema warnings, and values dropped translating pending writes to a new version. */
export interface AtOpen {
  warning: readonly ReplicaWarning[];
  dropped: readonly DroppedEvent[];
}

/**
 * The replica: the public API over its parts, and the one lock they share.
 *   capture.ts    one local transaction → one changeset in the outbox
 *   outbox.ts     pending entries, and how they are cut into requests/frames
 *   step.ts       one local transaction per page of log entries; the cursor
 *   sync-loop.ts  HTTP push/pull and background scheduling
 *   live.ts       the socket: subscription, coalesced pushes, acks
 *   watch.ts      watched queries, re-run on the "change" events of their tables
 * Every local transaction (user writes, steps, marking entries sent) runs
 * under `local`, one at a time.
 */
export class Replica {
  readonly clientId: string;
  private readonly d: Driver;
  private readonly readOnly: boolean;
  private readonly events = new Emitter<ReplicaEvents>();
  private readonly local = new Mutex();
  private readonly step: Step;
  private readonly loop: SyncLoop;
  private readonly live: Live;
  private readonly watches: Watches;
  private readonly sql: ReplicaSql;
  private readonly snaps: SnapshotClient;
  private divergence: DivergenceEvent | null = null;
  /** Raised at open, before anyone could listen: given to each listener of the event as it subscribes. */
  private readonly atOpen: AtOpen;
  private readonly tokens: TokenSource;
  private readonly lock: FileLock | undefined;
  private readonly limits: RelayLimits;
  /** Aborted by close(): ends requests the replica makes on its own (the limits at open). */
  private readonly opened = new AbortController();
  private closed = false;

  /** Use `openReplica`. */
  constructor(d: Driver, clientId: string, opts: ReplicaOptions, readOnly: boolean, sql: ReplicaSql, tokens: TokenSource, atOpen: AtOpen = { warning: [], dropped: [] }, lock?: FileLock) {
    this.d = d;
    this.clientId = clientId;
    this.readOnly = readOnly;
    this.sql = sql;
    this.atOpen = atOpen;
    this.tokens = tokens;
    this.lock = lock;
    const backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    const transport = opts.transport ?? httpTransport({
      url: opts.url,
      db: opts.db,
      token: () => tokens.current(),
      refreshToken: () => tokens.refresh(),
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.requestTimeoutMs === undefined ? {} : { timeoutMs: opts.requestTimeoutMs }),
    });
    this.limits = new RelayLimits(d, transport, (fn) => this.local.run(() => {
      if (!this.closed) fn();
    }), this.opened.signal);
    this.snaps = snapshotClient({ url: opts.url, db: opts.db, token: () => tokens.current(), refreshToken: () => tokens.refresh(), ...(opts.fetch ? { fetch: opts.fetch } : {}) });
    this.step = new Step(d, clientId, opts.conflicts ?? {}, this.events, sql);
    const step = this.step;
    const partReader = new outbox.PartReader();
    // A sync that ends (done or failed) ends its pass over a large entry: the bytes held for it go.
    for (const ended of ["sync", "error"] as const) this.events.on(ended, () => partReader.drop());
    const delegate: SyncDelegate & LiveDelegate = {
      now: realClock.now,
      sleep: realClock.sleep,
      transport,
      d,
      locked: (fn) => this.local.run(fn),
      assertOpen: () => this.assertOpen(),
      isClosed: () => this.closed,
      nextPush: (after, schemaAfter) => {
        // Larger than a part: left in the outbox, and sent in parts read from there.
        const limits = this.limits.entry;
        const entries = outbox.takeForPush(d, after, MAX_ENTRIES_PER_PUSH, Math.min(PUSH_BYTE_BUDGET, limits.requestBytes), limits.partBytes ?? Infinity);
        // The schema versions these entries need, ahead of them (none when the log has them).
        return { entries, schema: step.versions.unconfirmed(schemaAfter, entries[0]?.v) };
      },
      partBytes: () => this.limits.entry.partBytes,
      slice: (cseq, from, length) => this.local.run(() => partReader.read(d, cseq, from, length)),
      schemaAhead: () => step.versions.ahead(),
      cursor: () => step.cursor(),
      page: (entries) => this.local.run(() => step.page(entries)),
      acked: (acks, schema) => this.local.run(() => step.acked(acks, schema)),
      fatal: () => this.liveOffAfterFatal(),
      prepare: async (signal) => {
        // Only what is pushed depends on the limits: a sync with nothing pending pulls meanwhile.
        if (!this.readOnly && outbox.pendingCount(d) > 0) await this.limits.waitFor(signal);
        else void this.limits.learned();
      },
      relearn: (signal) => this.limits.relearn(signal),
      fail: (e) => this.fail(e),
      snapshotReset: (required, signal) => this.resetOntoSnapshot(required, signal),
      snapshotAsked: (seq, build) => void this.snapshotAsked(seq, build).catch((e: unknown) => this.fail(e)),
    };
    this.loop = new SyncLoop(delegate, this.events, { clientId, readOnly, backoff });
    this.live = new Live(delegate, this.loop, this.events, opts, { clientId, readOnly, backoff, tokens });
    tokens.onError = (e) => this.events.emit("error", e);
    // A new token: held pushes may now be allowed, and the socket moves to it before the old one expires.
    tokens.onChange(() => {
      this.loop.unblock();
      this.live.reconnect();
    });
    this.watches = new Watches((fn) =>
      this.local.run(() => {
        this.assertOpen();
        fn((sql, params, withTables) => {
          // Tables first: the driver compiles the statement once more with its authorizer on (they can change with the schema).
          const tables = withTables ? d.tablesRead(sql) : undefined;
          return { rows: plain<Row>(d.all(sql, params)), tables };
        });
      }),
    );
    let version = this.step.versions.local();
    this.events.on("change", (e) => {
      // A version from the log ran its DDL: a watched view may read other tables now.
      const now = this.step.versions.local();
      this.watches.changed(e.tables, now !== version);
      version = now;
    });
    // Ask now, in the background: the first sync then finds the answer (or the
    // request under way) and a fresh process's first fetch (loading the HTTP
    // client, connecting) is not paid inside it.
    void this.limits.learned().catch((e: unknown) => this.fail(e));
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
      const opts = { readOnly: this.readOnly, limits: this.limits.entry };
      const { result, entry, direct, tables } = await capture(this.d, this.step, fn, (e) => this.live.sendsAtOnce(e), opts);
      if (entry) this.events.emit("change", { source: "local", cursor: this.step.cursor(), tables });
      // A write to local tables alone replicates nothing (no "change" event), but it changed what watches may read.
      else if (tables.length > 0) this.watches.changed(tables);
      if (entry) {
        if (direct) this.live.send(entry);
        else if (this.live.on) queueMicrotask(() => this.live.flush());
      }
      return result;
    });
  }

  /** Read with SQL; rows as plain objects. Sees pending local writes. */
  query<T extends Row = Row>(sql: string, params?: Params): Promise<T[]> {
    return this.local.run(() => {
      this.assertOpen();
      const rows = plain<T>(this.d.all(sql, params));
      // `SELECT relay_id()` hands out keys: they must not come again after a restart.
      this.sql.fns.save(this.d);
      return rows;
    });
  }

  /**
   * Call back with the query's rows at once, then again after every commit
   * (a local write, a sync step) that changed them; never for a commit to
   * tables the query does not read, and once for a burst of commits. Rows are
   * plain objects; `T` is the caller's assertion of their shape, as for query().
   * Returns the function that ends the watch.
   */
  watch<T extends Row = Row>(sql: string, params: Params | undefined, callback: (rows: T[]) => void, options?: WatchOptions): () => void {
    this.assertOpen();
    return this.watches.add(sql, params, callback, options);
  }

  /**
   * Push everything pending, pull to the head of the log, rebase. Concurrent
   * calls queue. Entries the relay refuses for good are held (status().blocked)
   * and the pull still runs; the call then rejects with the refusal.
   */
  sync(signal?: AbortSignal): Promise<SyncEvent> {
    return this.loop.sync(signal);
  }

  /**
   * Drop the write the relay refused for good (status().blocked) and undo it
   * locally; the writes after it stay pending, re-applied without it, and go
   * out with the next sync. The one way a pending write is ever discarded.
   * Resolves its cseq, or null when nothing is blocked.
   */
  discardBlocked(): Promise<number | null> {
    return this.local.run(() => {
      this.assertOpen();
      const blocked = this.loop.blocked;
      if (!blocked) return null;
      this.step.discard(blocked.cseq);
      this.loop.unblock();
      return blocked.cseq;
    });
  }

  status(): ReplicaStatus {
    return {
      clientId: this.clientId,
      cursor: this.closed ? 0 : this.step.cursor(),
      head: this.loop.head,
      pending: this.closed ? 0 : outbox.pendingCount(this.d),
      connected: this.live.connected,
      live: this.live.on,
      driver: this.d.kind,
      readOnly: this.readOnly,
      blocked: this.loop.blocked ?? null,
      schemaVersion: this.closed ? 0 : this.step.versions.local(),
      progress: this.loop.progress,
      divergence: this.divergence,
    };
  }

  on<K extends keyof ReplicaEvents>(event: K, fn: (e: ReplicaEvents[K]) => void): () => void {
    const off = this.events.on(event, fn);
    if (event === "warning" || event === "dropped") {
      const raised = this.atOpen[event as keyof AtOpen] as readonly ReplicaEvents[K][];
      for (const x of raised) queueMicrotask(() => this.events.deliver(fn, x, event));
    }
    return off;
  }

  /**
   * The canonical snapshot of the confirmed state at the cursor (pending
   * local writes left out): same state, same bytes and hash on every driver.
   */
  snapshot(): Promise<Snapshot> {
    return this.local.run(async () => {
      this.assertOpen();
      const s = this.step.confirmed();
      return { ...s, hash: await sha256Hex(s.bytes) };
    });
  }

  /**
   * Download the relay's newest usable snapshot (progress events per part,
   * its hash checked) and reset onto it in one sync step (step.ts reset).
   * Unless `required`, only when it is ahead of the cursor.
   */
  private async resetOntoSnapshot(required: boolean, signal: AbortSignal): Promise<boolean> {
    // A bootstrap that cannot reach the snapshot routes (an older relay, a
    // custom transport) replays the log instead: the snapshot only saves time.
    const latest = required ? await this.snaps.latest(this.clientId, signal) : await this.snaps.latest(this.clientId, signal).catch(() => undefined);
    if (!latest) {
      if (required) throw new RelayError("snapshot_required", "the relay trimmed the log behind this replica's cursor but serves no snapshot");
      return false;
    }
    if (!required && latest.seq <= this.step.cursor()) return false;
    const bytes = await this.snaps.download(latest, signal, (done) =>
      this.events.emit("progress", { entries: 0, entriesExpected: latest.head - latest.seq, bytes: done, bytesExpected: latest.size }));
    if ((await sha256Hex(bytes)) !== latest.hash) throw new RelayError("internal", `snapshot ${latest.id} does not hash to what the relay says`);
    await this.local.run(() => this.step.reset({ seq: latest.seq, version: latest.version, bytes, schema: latest.schema, ownCseq: latest.clientCseq }));
    this.loop.seen(latest.head);
    return true;
  }

  /**
   * The relay asks for a snapshot at `seq` (a snapshot frame): only a replica
   * at exactly that seq with nothing pending answers — it uploads one
   * (`build`) or reports its hash — and learns whether a snapshot the relay
   * holds there says otherwise (a divergence).
   */
  private async snapshotAsked(seq: number, build: boolean): Promise<void> {
    const snap = await this.local.run(async () => {
      if (this.closed || this.step.cursor() !== seq || outbox.pendingCount(this.d) > 0 || this.step.versions.ahead()) return undefined;
      const s = this.step.confirmed();
      return { ...s, hash: await sha256Hex(s.bytes) };
    });
    if (!snap) return;
    let there = build ? [await this.snaps.upload(snap)] : await this.snaps.report(seq, snap.hash);
    // The replica asked to build may still be uploading: look again, a few times.
    for (let i = 0; i < 10 && there.length === 0 && !this.closed; i++) {
      await new Promise((r) => setTimeout(r, 100 * (i + 1)));
      there = await this.snaps.report(seq, snap.hash);
    }
    const other = there.find((x) => x.hash !== snap.hash);
    if (!other) return;
    this.divergence = { seq, local: snap.hash, snapshot: other.hash, agreeing: other.agreeing };
    this.events.emit("divergence", this.divergence);
  }

  /**
   * Repair: replace the confirmed state with the relay's newest usable
   * snapshot (pending writes kept and re-applied, the conflict log kept),
   * then sync as usual. For a replica that reported a divergence.
   */
  async resetToSnapshot(signal?: AbortSignal): Promise<SyncEvent> {
    const ev = await this.loop.resetAndSync(signal);
    this.divergence = null;
    return ev;
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
    if (enabled) return this.live.start();
    // The socket reports a drop only from an open socket; say once that live is off.
    if (this.live.stop()) this.events.emit("connection", { connected: false, live: false });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.opened.abort();
    this.live.stop();
    this.tokens.close();
    this.watches.close();
    await this.loop.close();
    await this.local.run(() => {
      this.closed = true;
      this.step.close();
      this.d.close();
      this.lock?.release();
    });
  }

  private liveOffAfterFatal(): void {
    if (this.live.on && !this.closed) this.setLive(false);
  }

  private fail(e: unknown): void {
    const err = asRelayError(e);
    if (err.code === "closed") return;
    this.events.emit("error", err);
    if (!err.retryable) this.liveOffAfterFatal();
  }

  private assertOpen(): void {
    if (this.closed) throw new RelayError("closed", "replica is closed");
  }
}
