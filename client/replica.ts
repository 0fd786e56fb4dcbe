import { asRelayError, RelayError } from "./errors.ts";
import { MAX_ENTRIES_PER_PUSH } from "../protocol/limits.ts";
import { DEFAULT_BACKOFF, realClock } from "./backoff.ts";
import { capture, plain } from "./capture.ts";
import type { ConflictRecord } from "./conflicts.ts";
import type { Driver, Params, Row } from "./drivers/types.ts";
import { Emitter, Mutex } from "./events.ts";
import { Live, type LiveDelegate } from "./live.ts";
import * as outbox from "./outbox.ts";
import { Step, type ReplicaSql } from "./step.ts";
import * as store from "./store.ts";
import { PUSH_BYTE_BUDGET, SyncLoop, type SyncDelegate } from "./sync-loop.ts";
import { httpTransport } from "./transport/http.ts";
import type { DroppedEvent, ReplicaEvents, ReplicaOptions, ReplicaStatus, ReplicaWarning, SyncEvent, Tx } from "./types.ts";
import { Watches, type WatchOptions } from "./watch.ts";

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
  /** Raised at open, before anyone could listen: given to each listener of the event as it subscribes. */
  private readonly atOpen: AtOpen;
  private closed = false;

  /** Use `openReplica`. */
  constructor(d: Driver, clientId: string, opts: ReplicaOptions, readOnly: boolean, sql: ReplicaSql, atOpen: AtOpen = { warning: [], dropped: [] }) {
    this.d = d;
    this.clientId = clientId;
    this.readOnly = readOnly;
    this.sql = sql;
    this.atOpen = atOpen;
    const backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    const transport = opts.transport ?? httpTransport({
      url: opts.url,
      db: opts.db,
      token: opts.token,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.requestTimeoutMs === undefined ? {} : { timeoutMs: opts.requestTimeoutMs }),
    });
    this.step = new Step(d, clientId, opts.conflicts ?? {}, this.events, sql);
    const step = this.step;
    const delegate: SyncDelegate & LiveDelegate = {
      now: realClock.now,
      sleep: realClock.sleep,
      transport,
      d,
      locked: (fn) => this.local.run(fn),
      assertOpen: () => this.assertOpen(),
      isClosed: () => this.closed,
      nextPush: (after, schemaAfter) => {
        const entries = outbox.takeForPush(d, after, MAX_ENTRIES_PER_PUSH, PUSH_BYTE_BUDGET);
        // The schema versions these entries need, ahead of them (none when the log has them).
        return { entries, schema: step.versions.unconfirmed(schemaAfter, entries[0]?.v) };
      },
      schemaAhead: () => step.versions.ahead(),
      cursor: () => step.cursor(),
      page: (entries) => this.local.run(() => step.page(entries)),
      acked: (acks, schema) => this.local.run(() => step.acked(acks, schema)),
      fatal: () => this.liveOffAfterFatal(),
      fail: (e) => this.fail(e),
    };
    this.loop = new SyncLoop(delegate, this.events, { clientId, readOnly, backoff });
    this.live = new Live(delegate, this.loop, this.events, opts, { clientId, readOnly, backoff });
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
      const { result, entry, direct, tables } = await capture(this.d, this.step, fn, (e) => this.live.sendsAtOnce(e), this.readOnly);
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

  /** Push everything pending, pull to the head of the log, rebase. Concurrent calls queue. */
  sync(signal?: AbortSignal): Promise<SyncEvent> {
    return this.loop.sync(signal);
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
      schemaVersion: this.closed ? 0 : this.step.versions.local(),
      progress: this.loop.progress,
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
    this.live.stop();
    this.watches.close();
    await this.loop.close();
    await this.local.run(() => {
      this.closed = true;
      this.step.close();
      this.d.close();
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
