import type { Ack, LogEntry } from "../protocol/messages.ts";
import { SchemaCache } from "./apply.ts";
import { discardPending } from "./discard.ts";
import type { ConflictOptions } from "./conflicts.ts";
import type { Driver } from "./drivers/types.ts";
import type { Emitter } from "./events.ts";
import * as outbox from "./outbox.ts";
import { lastOwnCseq, rebase } from "./rebase.ts";
import * as store from "./store.ts";
import type { ReplicaEvents } from "./types.ts";

/**
 * The sync step: one local write transaction over consecutive log entries
 * (a pulled page, a live frame, or our own acknowledged entries), which
 * rebases the pending ones (rebase.ts) and advances the cursor — all or
 * nothing. The step is the one owner of the replica's place in the log:
 * `cursor` (last seq applied) and `last_cseq` (last local transaction
 * numbered) are stored in _relay_meta, cached here, and written only here.
 * Callers hold the replica's local lock.
 */
export class Step {
  private readonly d: Driver;
  private readonly me: string;
  private readonly policy: ConflictOptions;
  private readonly events: Emitter<ReplicaEvents>;
  private readonly schema: SchemaCache;
  /** The schema version `schema` was read at. */
  private schemaVersion = -1;
  private readonly fk: boolean;
  /** Cached _relay_meta values; undefined: read them again. */
  private cached: { cursor?: number; lastCseq?: number } = {};
  /** Set by close(): a step queued behind it does nothing. */
  private closed = false;

  constructor(d: Driver, me: string, policy: ConflictOptions, events: Emitter<ReplicaEvents>) {
    this.d = d;
    this.me = me;
    this.policy = policy;
    this.events = events;
    this.schema = new SchemaCache(d);
    this.fk = store.foreignKeys(d);
  }

  cursor(): number {
    return (this.cached.cursor ??= Number(store.getMeta(this.d, "cursor") ?? 0));
  }

  /** The cseq the next captured transaction gets. */
  nextCseq(): number {
    return (this.cached.lastCseq ??= Number(store.getMeta(this.d, "last_cseq") ?? 0)) + 1;
  }

  /** Inside a capturing transaction: `cseq` is taken. Call `forget` if that transaction rolls back. */
  numbered(cseq: number): void {
    store.setMeta(this.d, "last_cseq", cseq);
    this.cached.lastCseq = cseq;
  }

  /** Drop the cache: a transaction that wrote it rolled back. */
  forget(): void {
    this.cached = {};
  }

  close(): void {
    this.closed = true;
  }

  /**
   * Apply log entries: those already applied are skipped; false when the
   * rest do not directly follow the cursor (a gap: the caller pulls instead).
   */
  page(page: readonly LogEntry[]): boolean {
    if (this.closed) return true;
    const cursor = this.cursor();
    const entries = page.filter((e) => e.seq > cursor);
    if (entries.length === 0) return true;
    if (entries[0]!.seq !== cursor + 1) return false;
    this.run(entries);
    return true;
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
  acked(acks: readonly Ack[]): boolean {
    if (this.closed) return true;
    const cursor = this.cursor();
    const fresh = acks.filter((a) => a.seq > cursor);
    if (fresh.length === 0) return true;
    const bytes = outbox.changesets(this.d, fresh[0]!.cseq, fresh.at(-1)!.cseq);
    const entries: LogEntry[] = [];
    for (const a of fresh) {
      const changeset = bytes.get(a.cseq);
      if (!changeset || (entries.length > 0 && a.seq !== entries.at(-1)!.seq + 1)) break;
      entries.push({ seq: a.seq, client: this.me, cseq: a.cseq, changeset, ts: 0 });
    }
    return entries.length === fresh.length && this.page(entries);
  }

  /** Drop pending entry `cseq` and what it did locally, in one transaction (discard.ts); only when the app asks. */
  discard(cseq: number): void {
    const d = this.d;
    if (this.fk) store.setForeignKeys(d, false); // as for log entries: re-applied writes may meet a broken reference
    let conflicts;
    try {
      d.exec("BEGIN IMMEDIATE");
      this.schema.clear();
      conflicts = discardPending(d, this.me, cseq, this.policy, this.schema);
      d.exec("COMMIT");
    } catch (e) {
      if (d.inTransaction) d.exec("ROLLBACK");
      throw e;
    } finally {
      if (this.fk) store.setForeignKeys(d, true);
    }
    for (const c of conflicts) this.events.emit("conflict", c);
    this.events.emit("change", { source: "local", cursor: this.cursor() });
  }

  /** `entries` directly follow the cursor. */
  private run(entries: readonly LogEntry[]): void {
    const d = this.d;
    // Replicated state may legitimately break a foreign key (a child row
    // inserted concurrently with its parent's deletion): enforcing it mid-apply
    // would make SQLite refuse the commit on every replica, so it is relaxed
    // while log entries are applied (outside BEGIN: the pragma is a no-op inside).
    if (this.fk) store.setForeignKeys(d, false);
    let result: ReturnType<typeof rebase>;
    try {
      d.exec("BEGIN IMMEDIATE");
      // Table definitions are read again only when the schema changed (DDL can
      // still come through query()): one PRAGMA per step instead of five
      // queries per table, which weighed on live steps of a few entries.
      const version = store.schemaVersion(d);
      if (version !== this.schemaVersion) this.schema.clear();
      this.schemaVersion = version;
      result = rebase(d, this.me, entries, this.policy, this.schema);
      for (const c of result.conflicts) store.recordConflict(d, c);
      const last = entries.at(-1)!.seq;
      store.setMeta(d, "cursor", last);
      // Never number a new transaction like an entry of ours the log holds.
      const own = lastOwnCseq(this.me, entries);
      if (own >= this.nextCseq()) this.numbered(own);
      d.exec("COMMIT");
      this.cached.cursor = last;
    } catch (e) {
      if (d.inTransaction) d.exec("ROLLBACK");
      this.forget();
      throw e;
    } finally {
      if (this.fk) store.setForeignKeys(d, true);
    }
    for (const c of result.conflicts) this.events.emit("conflict", c);
    if (result.applied > 0) this.events.emit("change", { source: "remote", cursor: entries.at(-1)!.seq });
  }
}
