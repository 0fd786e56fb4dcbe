import { changesetTables } from "../protocol/changeset.ts";
import type { Ack, LogEntry, SchemaAck } from "../protocol/messages.ts";
import { SchemaCache } from "./apply.ts";
import { discardPending } from "./discard.ts";
import type { ConflictOptions } from "./conflicts.ts";
import type { Driver } from "./drivers/types.ts";
import type { Emitter } from "./events.ts";
import { RelayFunctions } from "./functions.ts";
import * as outbox from "./outbox.ts";
import { SchemaState } from "./migrate.ts";
import { lastOwnCseq, rebase, type RebaseResult } from "./rebase.ts";
import { confirmedState, resetOnto, type SnapshotToApply } from "./snapshot.ts";
import * as store from "./store.ts";
import { Tables } from "./tables.ts";
import { guardAfterDdl } from "./triggers.ts";
import type { ReplicaEvents } from "./types.ts";

/** What the replica registered on its connection at open (open.ts): its SQL functions and its table list. */
export interface ReplicaSql {
  fns: RelayFunctions;
  tables: Tables;
}

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
  /** The schema versions: the local tables' and the log's (migrate.ts). */
  readonly versions: SchemaState;
  /** The schema version `schema` was read at. */
  private schemaVersion = -1;
  private readonly fk: boolean;
  /**
   * Cached values; undefined: read them again. `lastCseq`: the last cseq
   * taken; `storedCseq`: _relay_meta's last_cseq, which may lag behind while
   * the outbox holds the newer entries (their rows record their cseqs).
   */
  private cached: { cursor?: number; lastCseq?: number; storedCseq?: number } = {};
  /** Set by close(): a step queued behind it does nothing. */
  private closed = false;

  readonly sql: ReplicaSql;

  constructor(d: Driver, me: string, policy: ConflictOptions, events: Emitter<ReplicaEvents>, sql?: ReplicaSql) {
    this.d = d;
    this.me = me;
    this.policy = policy;
    this.events = events;
    this.sql = sql ?? { fns: RelayFunctions.install(d), tables: new Tables(d) };
    this.schema = new SchemaCache(d, this.sql.tables);
    this.versions = new SchemaState(d, this.sql.tables);
    this.fk = store.foreignKeys(d);
  }

  cursor(): number {
    return (this.cached.cursor ??= Number(store.getMeta(this.d, "cursor") ?? 0));
  }

  /** The cseq the next captured transaction gets: after the last one stored or still in the outbox. */
  nextCseq(): number {
    return (this.cached.lastCseq ??= Math.max(this.storedCseq(), outbox.lastCseq(this.d))) + 1;
  }

  /**
   * Inside a capturing transaction: `cseq` is taken. The outbox row queued in
   * the same transaction records it, so nothing more is written per write;
   * the step stores the number once entries leave the outbox. Call `forget`
   * if that transaction rolls back.
   */
  numbered(cseq: number): void {
    this.cached.lastCseq = cseq;
  }

  private storedCseq(): number {
    return (this.cached.storedCseq ??= Number(store.getMeta(this.d, "last_cseq") ?? 0));
  }

  /** Drop the cache: a transaction that wrote it rolled back. */
  forget(): void {
    this.cached = {};
    this.versions.forget();
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
  acked(acks: readonly Ack[], schema: readonly SchemaAck[] = []): boolean {
    if (this.closed) return true;
    const cursor = this.cursor();
    const fresh = acks.filter((a) => a.seq > cursor);
    if (this.ownUnchanged(fresh, schema.filter((s) => s.seq > cursor), cursor)) return true;
    const entries: LogEntry[] = [];
    if (fresh.length > 0) {
      const pushed = outbox.changesets(this.d, fresh[0]!.cseq, fresh.at(-1)!.cseq);
      for (const a of fresh) {
        const p = pushed.get(a.cseq);
        if (!p) return false;
        entries.push({ seq: a.seq, client: this.me, cseq: a.cseq, changeset: p.changeset, ts: 0, v: p.v ?? 0 });
      }
    }
    // Versions this replica added: their statements are its own.
    for (const s of schema) {
      if (s.seq <= cursor) continue;
      const key = this.versions.statementsKey(s.version);
      if (key === undefined) return false;
      entries.push({ seq: s.seq, client: this.me, cseq: 0, changeset: new Uint8Array(0), ts: 0, v: s.version, schema: JSON.parse(key) as string[] });
    }
    if (entries.length === 0) return true;
    entries.sort((a, b) => a.seq - b.seq);
    if (entries.some((e, i) => i > 0 && e.seq !== entries[i - 1]!.seq + 1)) return false;
    return this.page(entries);
  }

  /**
   * Acked entries that directly follow the cursor: the oldest pending ones,
   * unchanged since capture, and versions this replica already runs. What
   * rebase would do with them (they leave the outbox, the log is at those
   * versions, nothing is applied), without reading the changesets, which for
   * one large transaction are tens of MB read three times, and without
   * undoing and redoing the rest (rebase's fast path stops at a schema entry).
   */
  private ownUnchanged(fresh: readonly Ack[], schema: readonly SchemaAck[], cursor: number): boolean {
    if (fresh.length === 0) return false;
    const local = this.versions.local();
    const seqs = [...fresh.map((a) => a.seq), ...schema.map((s) => s.seq)].sort((a, b) => a - b);
    if (seqs.some((seq, i) => seq !== cursor + 1 + i) || schema.some((s) => s.version > local || this.versions.statementsKey(s.version) === undefined)) return false;
    const cseqs = fresh.map((a) => a.cseq);
    if (!outbox.unchangedHead(this.d, cseqs, local)) return false;
    this.transact(seqs.at(-1)!, false, () => Math.max(...cseqs), () => {
      for (const s of schema) {
        const key = this.versions.statementsKey(s.version)!;
        this.versions.fromLog({ seq: s.seq, client: this.me, cseq: 0, changeset: new Uint8Array(0), ts: 0, v: s.version, schema: JSON.parse(key) as string[] });
      }
      for (const c of cseqs) outbox.dequeue(this.d, c);
      return { conflicts: [], applied: 0, skipped: 0, dropped: [] };
    });
    return true;
  }

  /** Drop pending entry `cseq` and what it did locally, in one transaction (discard.ts); only when the app asks. */
  discard(cseq: number): void {
    const res = this.localTx(() => {
      this.schema.clear();
      guardAfterDdl(this.d, this.sql.tables);
      // Re-applied writes already hold their triggers' effects (triggers.ts).
      return this.sql.fns.replay(() => discardPending(this.d, this.me, cseq, this.policy, this.schema, this.versions));
    });
    for (const c of res.conflicts) this.events.emit("conflict", c);
    for (const x of res.dropped) this.events.emit("dropped", x);
    if (res.touched.length > 0) this.events.emit("change", { source: "local", cursor: this.cursor(), tables: [...tablesOf(res.touched), ...this.sql.tables.local] });
  }

  /** `entries` directly follow the cursor. */
  private run(entries: readonly LogEntry[]): void {
    const last = entries.at(-1)!.seq;
    const { result, ddl, tablesBefore } = this.transact(last, entries.some((e) => e.schema !== undefined), () => lastOwnCseq(this.me, entries), () =>
      rebase(this.d, this.me, entries, this.policy, this.schema, this.versions));
    const tables = ddl ? new Set([...tablesBefore, ...allTables(this.sql.tables), ...tablesOf(entries)]) : [...tablesOf(entries), ...this.sql.tables.local];
    this.emitResult(result, last, [...tables]);
  }

  /**
   * Reset onto a snapshot (snapshot.ts resetOnto): the confirmed state
   * becomes the snapshot's and the cursor its seq; pending writes are
   * re-applied on top, the conflict log stays. Used to bootstrap, and when
   * the cursor is older than the relay's retained log.
   */
  reset(snap: SnapshotToApply): void {
    if (this.closed) return;
    const { result, tablesBefore } = this.transact(snap.seq, true, () => snap.ownCseq, () =>
      resetOnto(this.d, this.me, snap, this.policy, this.schema, this.versions, this.sql.tables.at(store.schemaVersion(this.d)).replicated));
    this.emitResult(result, snap.seq, [...new Set([...tablesBefore, ...allTables(this.sql.tables)])]);
  }

  /**
   * The confirmed state at the cursor, canonical (snapshot.ts), read under
   * replay's rules: pending writes are undone with triggers on replicated
   * tables held still, as in a sync step (a delete trigger's audit row would
   * otherwise land in the snapshot).
   */
  confirmed(): { seq: number; version: number; bytes: Uint8Array } {
    return this.sql.fns.replay(() => confirmedState(this.d, this.cursor(), this.versions, this.sql.tables));
  }

  /**
   * One local write transaction that applies what `body` does and leaves the
   * cursor at `last`, all or nothing. `schemaMayChange`: list the tables
   * before, for the change event.
   */
  private transact(last: number, schemaMayChange: boolean, own: () => number, body: () => RebaseResult): { result: RebaseResult; ddl: boolean; tablesBefore: readonly string[] } {
    const d = this.d;
    // A version from the log that runs here may change any table (a rename
    // rewrites the views and triggers over it): its step names all of them,
    // before and after.
    let ddl = false;
    let tablesBefore: readonly string[] = [];
    const result = this.localTx(() => {
      // Read before the body takes entries out of the outbox (the number may live only there).
      const taken = this.nextCseq() - 1;
      // Table definitions are read again only when the schema changed (DDL can
      // still come through query()): one PRAGMA per step instead of five
      // queries per table, which weighed on live steps of a few entries.
      let version = store.schemaVersion(d);
      if (version !== this.schemaVersion) {
        this.schema.clear();
        // DDL through query() may have added a trigger since: guarded before anything is replayed.
        guardAfterDdl(d, this.sql.tables);
        version = store.schemaVersion(d);
      }
      this.schemaVersion = version;
      const versionBefore = this.versions.local();
      if (schemaMayChange) tablesBefore = allTables(this.sql.tables);
      // Triggers that write replicated tables stay still meanwhile (triggers.ts).
      const result = this.sql.fns.replay(body);
      ddl = this.versions.local() !== versionBefore;
      for (const c of result.conflicts) store.recordConflict(d, c);
      store.setMeta(d, "cursor", last);
      // Never number a new transaction like an entry of ours the log holds,
      // nor like one this step takes out of the outbox: stored here.
      const numbered = Math.max(own(), taken);
      if (numbered > this.storedCseq()) {
        store.setMeta(d, "last_cseq", numbered);
        this.cached.storedCseq = this.cached.lastCseq = numbered;
      }
      return result;
    }, true);
    this.cached.cursor = last;
    return { result, ddl, tablesBefore };
  }

  /**
   * The step's one local write transaction: `body` and the relay_id()
   * counter committed together, or nothing. Replicated state may
   * legitimately break a foreign key (a child row inserted concurrently with
   * its parent's deletion): enforcing it mid-apply would make SQLite refuse
   * the commit on every replica, so it is relaxed meanwhile (outside BEGIN:
   * the pragma is a no-op inside).
   *
   * `fromLog`: the transaction holds only what the relay can give again (a
   * sync step or reset: entries of the log, a cursor, outbox entries it
   * acknowledged — a retried push gets their seq back), so it commits
   * without waiting for the disk (synchronous=NORMAL; both drivers open files
   * in WAL with FULL). In WAL a commit's flush covers every commit before
   * it, so a power loss can take only the latest such steps, never a local
   * write (those flush); the next sync redoes them. On OPFS a flush is most
   * of a commit's cost (bench/browser-journal.ts).
   */
  private localTx<T>(body: () => T, fromLog = false): T {
    const d = this.d;
    const relaxed = fromLog && d.persistent;
    if (this.fk) store.setForeignKeys(d, false);
    if (relaxed) d.exec("PRAGMA synchronous = NORMAL");
    try {
      d.exec("BEGIN IMMEDIATE");
      const out = body();
      this.sql.fns.save(d);
      d.exec("COMMIT");
      return out;
    } catch (e) {
      if (d.inTransaction) d.exec("ROLLBACK");
      this.forget();
      // The rollback may have undone a trigger's guard: read the schema again next time.
      this.schemaVersion = -1;
      this.sql.tables.reset();
      throw e;
    } finally {
      if (this.fk) store.setForeignKeys(d, true);
      if (relaxed) d.exec("PRAGMA synchronous = FULL");
    }
  }

  private emitResult(result: RebaseResult, last: number, tables: string[]): void {
    for (const c of result.conflicts) this.events.emit("conflict", c);
    for (const x of result.dropped) this.events.emit("dropped", x);
    if (result.applied > 0) this.events.emit("change", { source: "remote", cursor: last, tables });
  }
}

/** Every table of the app's schema, replicated or local. */
function allTables(tables: Tables): string[] {
  return [...tables.replicated, ...tables.local];
}

/** The tables a step's entries change (what watches are invalidated by). Runs after COMMIT, so it must not throw. */
function tablesOf(entries: readonly { changeset: Uint8Array }[]): string[] {
  const tables = new Set<string>();
  for (const e of entries) {
    try {
      for (const t of changesetTables(e.changeset)) tables.add(t.name);
    } catch {
      // A malformed entry was skipped by the step (a "corrupt" conflict): it changed nothing.
    }
  }
  return [...tables];
}
