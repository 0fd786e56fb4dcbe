import { asRelayError, RelayError } from "./errors.ts";
import { PULL_BYTE_BUDGET } from "../protocol/limits.ts";
import type { Ack, LogEntry, PushEntry, SchemaAck } from "../protocol/messages.ts";
import type { SchemaVersion } from "../protocol/schema.ts";
import { withRetry, type BackoffOptions, type Clock } from "./backoff.ts";
import { Mutex, type Emitter } from "./events.ts";
import type { Transport } from "./transport/http.ts";
import type { ReplicaEvents, SyncEvent, SyncProgress } from "./types.ts";

/**
 * The sync loop: HTTP push then pull, each request retried with backoff, and
 * when background syncs run. Time and the network come from the delegate,
 * so tests drive it with a fake clock and transport. Background runs:
 *
 *   idle ──request()──▶ running ──settled──▶ idle
 *                        │  ▲                   (again: run once more)
 *              request() ▼  │ settled
 *                      running(again)
 *   any ──close()──▶ closed    (ends the run in flight and every wait)
 *
 * retryLater(ms) waits on the delegate's clock, then request()s; close()
 * cancels the wait.
 */
export type LoopState = { name: "idle" } | { name: "running"; again: boolean } | { name: "closed" };

/** Bytes of changesets per push request; well under the relay's 32 MiB default body limit. */
export const PUSH_BYTE_BUDGET = PULL_BYTE_BUDGET;

export interface SyncDelegate extends Clock {
  readonly transport: Transport;
  /** Runs `fn` under the replica's local lock (after the local transactions queued before it). */
  locked<T>(fn: () => T): Promise<T>;
  /** Throws RelayError("closed") once the replica is closed. */
  assertOpen(): void;
  /**
   * Under the lock: the next request's entries after cseq `after`, marked
   * sent before they go, and the schema versions above `schemaAfter` they
   * need the log to have (sent ahead of them).
   */
  nextPush(after: number, schemaAfter: number): { entries: PushEntry[]; schema: SchemaVersion[] };
  /** The replica has schema versions the log lacks (only HTTP pushes carry them). */
  schemaAhead(): boolean;
  cursor(): number;
  /** A sync step over pulled entries; false when they do not follow the cursor. */
  page(entries: readonly LogEntry[]): Promise<boolean>;
  /** A sync step over our own acknowledged entries; false when they do not follow the cursor. */
  acked(acks: readonly Ack[], schema?: readonly SchemaAck[]): Promise<boolean>;
  /** A background sync failed for good (auth, a refused entry...): stop live sync. */
  fatal(): void;
}

export interface SyncLoopOptions {
  clientId: string;
  readOnly: boolean;
  backoff: BackoffOptions;
}

export class SyncLoop {
  /** Last log seq the relay reported. */
  head = 0;
  /** The pull in progress, when it takes more than one page. */
  progress: SyncProgress | null = null;
  private state: LoopState = { name: "idle" };
  /** Serialises sync runs. */
  private readonly runs = new Mutex();
  private readonly stopping = new AbortController();
  private readonly delegate: SyncDelegate;
  private readonly events: Emitter<ReplicaEvents>;
  private readonly opts: SyncLoopOptions;

  constructor(delegate: SyncDelegate, events: Emitter<ReplicaEvents>, opts: SyncLoopOptions) {
    this.delegate = delegate;
    this.events = events;
    this.opts = opts;
  }

  get current(): LoopState {
    return this.state;
  }

  seen(head: number): void {
    this.head = Math.max(this.head, head);
  }

  /** Push everything pending, pull to the head of the log. Concurrent calls queue. */
  sync(signal?: AbortSignal): Promise<SyncEvent> {
    return this.runs.run(async () => {
      this.delegate.assertOpen();
      // close() ends a sync in flight (a request, a backoff wait) rather than waiting it out.
      const stop = signal ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal;
      try {
        let pushed = 0;
        let pulled = 0;
        try {
          pushed = this.opts.readOnly ? 0 : await this.pushAll(stop);
        } catch (e) {
          // The log moved to a newer schema: pulling applies it and
          // translates what is pending, which can then be pushed.
          if (!(e instanceof RelayError && e.code === "schema_outdated")) throw e;
          pulled = await this.pullAll(stop);
          pushed = await this.pushAll(stop);
        }
        pulled += await this.pullAll(stop);
        const ev: SyncEvent = { pushed, pulled, cursor: this.delegate.cursor(), head: this.head };
        this.events.emit("sync", ev);
        return ev;
      } catch (e) {
        const err = asRelayError(e);
        if (err.code !== "aborted") this.events.emit("error", err);
        throw err;
      }
    });
  }

  /** Run a background sync soon; requests made while one runs coalesce into one more run. Errors become "error" events. */
  request(): void {
    const s = this.state;
    if (s.name === "closed") return;
    if (s.name === "running") {
      s.again = true;
      return;
    }
    this.state = { name: "running", again: false };
    this.sync().then(
      () => this.settled(),
      (e: unknown) => {
        if (e instanceof RelayError && !e.retryable && e.code !== "closed" && e.code !== "aborted") this.delegate.fatal();
        this.settled();
      },
    );
  }

  /** request() after `ms`, unless closed first. */
  retryLater(ms: number): void {
    if (this.state.name === "closed") return;
    this.delegate.sleep(ms, this.stopping.signal).then(
      () => this.request(),
      () => undefined, // aborted by close()
    );
  }

  /** No more runs; the one in flight ends with "aborted". Resolves once it has. */
  close(): Promise<void> {
    this.state = { name: "closed" };
    this.stopping.abort();
    return this.runs.run(() => undefined);
  }

  private settled(): void {
    const s = this.state;
    if (s.name !== "running") return;
    this.state = { name: "idle" };
    if (s.again) this.request();
  }

  private retry<T>(fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    return withRetry(fn, this.opts.backoff, signal, (ms, s) => this.delegate.sleep(ms, s));
  }

  private async pushAll(signal: AbortSignal): Promise<number> {
    const { delegate } = this;
    let pushed = 0;
    let after = 0;
    let schemaAfter = 0;
    const acks: Ack[] = [];
    const schemaAcks: SchemaAck[] = [];
    for (;;) {
      const { entries: batch, schema } = await delegate.locked(() => delegate.nextPush(after, schemaAfter));
      if (batch.length === 0 && schema.length === 0) {
        // Our own entries (and versions) need not come back down in the pull that follows.
        if (acks.length > 0 || schemaAcks.length > 0) await delegate.acked(acks, schemaAcks);
        return pushed;
      }
      const res = await this.retry(() => delegate.transport.push(this.opts.clientId, batch, signal, schema), signal);
      this.seen(res.head);
      acks.push(...res.acks);
      schemaAcks.push(...(res.schema ?? []));
      pushed += batch.length;
      after = batch.at(-1)?.cseq ?? after;
      schemaAfter = schema.at(-1)?.version ?? schemaAfter;
    }
  }

  private async pullAll(signal: AbortSignal): Promise<number> {
    const { delegate } = this;
    let pulled = 0;
    let start: number | undefined;
    try {
      for (;;) {
        const after = await delegate.locked(() => delegate.cursor());
        start ??= after;
        const page = await this.retry(() => delegate.transport.pull(after, undefined, signal), signal);
        this.seen(page.head);
        // Reported only for a pull of more than one page: a bar that would fill in one step says nothing.
        if (page.more && !this.progress) this.progress = { entries: 0, entriesExpected: 0, bytes: 0, bytesExpected: null };
        if (page.entries.length > 0) {
          if (page.entries[0]!.seq !== after + 1) throw new RelayError("internal", `relay skipped from ${after} to ${page.entries[0]!.seq}`);
          // false only if the socket applied past us meanwhile: the next request starts from the new cursor.
          await delegate.page(page.entries);
          pulled += page.entries.length;
        }
        if (this.progress) this.reportProgress(page.entries, page.head - start);
        if (!page.more) return pulled;
      }
    } finally {
      this.progress = null;
    }
  }

  private reportProgress(entries: readonly LogEntry[], expected: number): void {
    const p = this.progress!;
    let bytes = p.bytes;
    for (const e of entries) bytes += e.changeset.byteLength;
    const entriesDone = p.entries + entries.length;
    this.progress = { entries: entriesDone, entriesExpected: Math.max(expected, entriesDone), bytes, bytesExpected: null };
    this.events.emit("progress", this.progress);
  }
}
