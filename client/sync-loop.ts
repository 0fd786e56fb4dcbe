import { asRelayError, RelayError } from "./errors.ts";
import { PULL_BYTE_BUDGET } from "../protocol/limits.ts";
import type { Ack, LogEntry, PullResponse, PushResponse, SchemaAck } from "../protocol/messages.ts";
import type { SchemaVersion } from "../protocol/schema.ts";
import { withRetry, type BackoffOptions, type Clock } from "./backoff.ts";
import { Mutex, type Emitter } from "./events.ts";
import type { Transport } from "./transport/http.ts";
import type { OutboxEntry } from "./outbox.ts";
import { holdsLarge, pushInParts } from "./parts.ts";
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
  nextPush(after: number, schemaAfter: number): { entries: OutboxEntry[]; schema: SchemaVersion[] };
  /**
   * Entries larger than one request (nextPush gives one alone, by `size`):
   * the relay's part size, and bytes of such an entry read from the outbox
   * under the lock, a part at a time (parts.ts).
   */
  partBytes?(): number | undefined;
  slice?(cseq: number, from: number, length: number): Promise<Uint8Array>;
  /** The replica has schema versions the log lacks (only HTTP pushes carry them). */
  schemaAhead(): boolean;
  cursor(): number;
  /** A sync step over pulled entries; false when they do not follow the cursor. */
  page(entries: readonly LogEntry[]): Promise<boolean>;
  /** A sync step over our own acknowledged entries; false when they do not follow the cursor. */
  acked(acks: readonly Ack[], schema?: readonly SchemaAck[]): Promise<boolean>;
  /**
   * Reset onto the relay's newest snapshot (bootstrap, or a cursor older than
   * the retained log: `required`). False when there is none worth taking.
   */
  snapshotReset(required: boolean, signal: AbortSignal): Promise<boolean>;
  /** A background sync failed for good (auth, a refused entry...): stop live sync. */
  fatal(): void;
  /** Runs first in every sync run (the replica waits here for the relay's limits, asked at open, when it has entries to push); honours `signal`. */
  prepare?(signal: AbortSignal): Promise<void>;
  /** Ask the relay's limits again (a push refused as too large or mis-cut: the relay was reconfigured). */
  relearn?(signal: AbortSignal): Promise<void>;
}

export interface SyncLoopOptions {
  clientId: string;
  readOnly: boolean;
  backoff: BackoffOptions;
}

/** A push the relay refused for good: the entry it starts with, and why (status().blocked). */
export interface Blocked {
  cseq: number;
  code: string;
  message: string;
}

/** A push request that failed: why, and the first entry it carried (undefined: schema versions alone). */
class PushFailed {
  readonly error: RelayError;
  readonly cseq: number | undefined;
  constructor(error: RelayError, cseq: number | undefined) {
    this.error = error;
    this.cseq = cseq;
  }
}

export class SyncLoop {
  /** Last log seq the relay reported. */
  head = 0;
  /**
   * Set when the relay refuses a push for good (forbidden, too large...):
   * that entry and every later one are held, never dropped; background syncs
   * and the socket only pull until an explicit sync() or a new token
   * (unblock()) tries again. `schema_outdated` is not such a refusal
   * (pushMigrating()).
   */
  blocked: Blocked | undefined;
  /** resetAndSync() asked for a reset the next pull has not done yet. */
  private resetNext = false;
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

  /**
   * Push everything pending, pull to the head of the log. Concurrent calls
   * queue. A push refused for good does not stop the pull: the entries stay
   * pending (`blocked`), an "error" event names the first, and an explicit
   * call (`retryBlocked`) then rejects with that error once it has pulled.
   */
  sync(signal?: AbortSignal, retryBlocked = true): Promise<SyncEvent> {
    return this.runs.run(async () => {
      this.delegate.assertOpen();
      // close() ends a sync in flight (a request, a backoff wait) rather than waiting it out.
      const stop = signal ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal;
      let refused: RelayError | undefined;
      try {
        await this.delegate.prepare?.(stop);
        let pushed = 0;
        let pulled = 0;
        if (!this.opts.readOnly && (retryBlocked || !this.blocked)) {
          try {
            ({ pushed, pulled } = await this.pushMigrating(stop));
            this.blocked = undefined;
          } catch (e) {
            refused = this.refusedForGood(e);
          }
        }
        pulled += await this.pullAll(stop);
        if (refused) {
          this.events.emit("error", refused);
          if (retryBlocked) throw refused;
        }
        const ev: SyncEvent = { pushed, pulled, cursor: this.delegate.cursor(), head: this.head };
        this.events.emit("sync", ev);
        return ev;
      } catch (e) {
        const err = asRelayError(e);
        if (err.code !== "aborted" && err !== refused) this.events.emit("error", err);
        throw err;
      }
    });
  }

  /**
   * Push everything pending. `schema_outdated` means the log moved to a newer
   * schema: pulling applies it and translates what is pending, which is then
   * pushed again — a step of syncing, never a refusal to hold. So does
   * `snapshot_required` on a push: entries of ours were compacted before we
   * heard they landed, and the pull resets onto the snapshot, which holds
   * them. Only if the pull did not move the cursor (entries, or a reset onto
   * a snapshot) does the refusal stand (held as blocked like any refusal):
   * pulling cannot fix it, and retrying would spin.
   */
  private async pushMigrating(signal: AbortSignal): Promise<{ pushed: number; pulled: number }> {
    let pulled = 0;
    for (;;) {
      try {
        return { pushed: await this.pushAll(signal), pulled };
      } catch (e) {
        if (!(e instanceof PushFailed && (e.error.code === "schema_outdated" || e.error.code === "snapshot_required"))) throw e;
        const before = this.delegate.cursor();
        pulled += await this.pullAll(signal);
        if (this.delegate.cursor() === before) throw e;
      }
    }
  }

  /** Try blocked entries again on the next background run (a new token may be allowed what the old one was not). */
  unblock(): void {
    if (!this.blocked) return;
    this.blocked = undefined;
    this.request();
  }

  /**
   * A push error that retrying cannot fix becomes `blocked`, with the entry
   * named; anything else is rethrown. A request of schema versions alone
   * (no write waits on them yet) holds nothing: it is reported, pulls go on,
   * and the next sync tries it again.
   */
  private refusedForGood(e: unknown): RelayError {
    if (!(e instanceof PushFailed)) throw e;
    const { error: err, cseq } = e;
    if (err.retryable || err.code === "aborted" || err.code === "closed") throw err;
    if (cseq === undefined) return new RelayError(err.code, `this replica's schema versions cannot be pushed yet: ${err.message}`, { cause: err });
    const named = new RelayError(err.code, `local write ${cseq} (and those after it) cannot be pushed, held until the next sync(): ${err.message}`, { cause: err });
    this.blocked = { cseq, code: err.code, message: err.message };
    return named;
  }

  /** Reset onto the relay's newest snapshot at the start of the next sync's pull, then sync as usual (a repair). */
  resetAndSync(signal?: AbortSignal): Promise<SyncEvent> {
    this.resetNext = true;
    return this.sync(signal);
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
    this.sync(undefined, false).then(
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
    let relearned = false;
    for (;;) {
      const { entries: batch, schema } = await delegate.locked(() => delegate.nextPush(after, schemaAfter));
      if (batch.length === 0 && schema.length === 0) {
        // Our own entries (and versions) need not come back down in the pull that follows.
        if (acks.length > 0 || schemaAcks.length > 0) await delegate.acked(acks, schemaAcks);
        return pushed;
      }
      let res;
      try {
        const parted = batch[0]?.size === undefined ? undefined : { cseq: batch[0].cseq, v: batch[0].v ?? 0, size: batch[0].size };
        res = parted ? await this.pushParted(parted, schema, signal) : await this.retry(() => delegate.transport.push(this.opts.clientId, batch, signal, schema), signal);
      } catch (e) {
        const err = asRelayError(e);
        // Cut for limits the relay no longer has (reconfigured since they were learned): learn them again and cut anew, once.
        if (!relearned && delegate.relearn && (err.code === "payload_too_large" || err.code === "bad_request")) {
          relearned = true;
          await delegate.relearn(signal);
          continue;
        }
        throw new PushFailed(err, batch[0]?.cseq);
      }
      this.seen(res.head);
      acks.push(...res.acks);
      schemaAcks.push(...(res.schema ?? []));
      pushed += batch.length;
      after = batch.at(-1)?.cseq ?? after;
      schemaAfter = schema.at(-1)?.version ?? schemaAfter;
    }
  }

  /** An entry larger than one request, in parts (parts.ts), after the schema versions it needs. */
  private async pushParted(entry: { cseq: number; v: number; size: number }, schema: SchemaVersion[], signal: AbortSignal): Promise<PushResponse> {
    const { delegate } = this;
    const { transport } = delegate;
    const partBytes = delegate.partBytes?.();
    if (partBytes === undefined || !transport.pushPart || !delegate.slice) throw new RelayError("internal", `cseq ${entry.cseq} needs a push in parts, which this transport cannot do`);
    const client = this.opts.clientId;
    const versions = schema.length > 0 ? await this.retry(() => transport.push(client, [], signal, schema), signal) : undefined;
    const res = await pushInParts(entry, partBytes, (from, length) => delegate.slice!(entry.cseq, from, length), (part) => transport.pushPart!(client, part, signal), (fn) => this.retry(fn, signal));
    return versions?.schema ? { ...res, schema: versions.schema } : res;
  }

  /**
   * Pull to the head, one sync step per page. Pipelined: the next page is
   * requested (from the last seq of this one) while this one applies, so the
   * network and the local apply overlap instead of taking turns (except after
   * a page holding an entry larger than a part: holdsLarge); pages still
   * apply one at a time, in log order. A step that fails or finds a gap
   * cancels the request in flight (a gap pulls again from the cursor).
   */
  private async pullAll(signal: AbortSignal): Promise<number> {
    const { delegate } = this;
    let pulled = 0;
    let start: number | undefined;
    if (this.resetNext) {
      this.resetNext = false;
      await delegate.snapshotReset(true, signal);
    }
    // An empty cursor starts from the newest snapshot: bootstrap costs the state, not the history.
    if ((await delegate.locked(() => delegate.cursor())) === 0) await delegate.snapshotReset(false, signal);
    let forced = false;
    try {
      let next = this.requestPage(await delegate.locked(() => delegate.cursor()), signal);
      for (;;) {
        const { after, response } = next;
        start ??= after;
        let page: PullResponse;
        try {
          page = await response;
        } catch (e) {
          // Behind the retained log: the snapshot replaces what was trimmed (once: it moves the cursor past the cut).
          if (!(e instanceof RelayError && e.code === "snapshot_required") || forced) throw e;
          forced = true;
          await delegate.snapshotReset(true, signal);
          start = undefined;
          next = this.requestPage(await delegate.locked(() => delegate.cursor()), signal);
          continue;
        }
        // A page that arrived before close() (or the caller's abort) is not applied after it.
        if (signal.aborted) throw new RelayError("aborted", "sync aborted");
        this.seen(page.head);
        // Reported only for a pull of more than one page: a bar that would fill in one step says nothing.
        if (page.more && !this.progress) this.progress = { entries: 0, entriesExpected: 0, bytes: 0, bytesExpected: null };
        const entries = page.entries;
        if (entries.length > 0 && entries[0]!.seq !== after + 1) throw new RelayError("internal", `relay skipped from ${after} to ${entries[0]!.seq}`);
        // A page holding an entry larger than a part (fetched in parts) applies before the next is asked for, which
        // may hold another: one such entry in memory at a time, not two.
        const ahead = page.more && !holdsLarge(entries, delegate.partBytes?.());
        if (ahead) next = this.requestPage(entries.at(-1)?.seq ?? after, signal);
        let inOrder = true;
        if (entries.length > 0) {
          try {
            // The request must leave before the apply holds the thread (undici writes it on a later turn).
            if (ahead) await nextTurn();
            // false: they do not follow the cursor (a gap): pull again from it.
            inOrder = await delegate.page(entries);
          } catch (e) {
            if (ahead) next.cancel();
            throw e;
          }
          pulled += entries.length;
        }
        if (this.progress) this.reportProgress(entries, page.head - start);
        if (!page.more) return pulled;
        if (!inOrder) {
          if (ahead) next.cancel();
          next = this.requestPage(await delegate.locked(() => delegate.cursor()), signal);
        } else if (!ahead) next = this.requestPage(entries.at(-1)?.seq ?? after, signal);
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

  /** A page request (with its retries) that can be cancelled on its own. */
  private requestPage(after: number, signal: AbortSignal): { after: number; response: Promise<PullResponse>; cancel(): void } {
    const own = new AbortController();
    const both = AbortSignal.any([signal, own.signal]);
    const response = this.retry(() => this.delegate.transport.pull(after, undefined, both), both);
    // It may fail while the page before it still applies: handled here, thrown where it is awaited.
    response.catch(() => undefined);
    return { after, response, cancel: () => own.abort() };
  }
}

/** One turn of the event loop (I/O included), where setImmediate exists; else a zero timeout. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => (typeof setImmediate === "function" ? setImmediate(resolve) : setTimeout(resolve, 0)));
}
