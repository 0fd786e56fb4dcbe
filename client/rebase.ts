import { sameBytes } from "../protocol/codec.ts";
import { invertChangeset } from "./changeset-writer.ts";
import type { LogEntry } from "../protocol/messages.ts";
import { applyAllClean, applyWithPolicy, isEntryFault, type SchemaCache } from "./apply.ts";
import type { ConflictOptions, ConflictRecord } from "./conflicts.ts";
import { CONFLICT, RESOLUTION, type Driver } from "./drivers/types.ts";
import type { SchemaState } from "./migrate.ts";
import * as outbox from "./outbox.ts";
import type { OutboxRow } from "./outbox.ts";
import { translate, type Dropped } from "./translate.ts";

export type { Dropped } from "./translate.ts";

/**
 * Rebase, the body of a sync step over log entries (DESIGN.md invariant 6).
 * The caller runs it inside one local write transaction and rolls back on any
 * throw, so the database is either fully advanced or exactly as before.
 *
 *   undo pending (inverse of what each holds locally, newest first)
 *   → apply pulled entries in log order (own entries leave the outbox); a
 *     schema entry runs its migration there (migrate.ts), and data entries
 *     captured under an older version than the local tables' are translated
 *   → re-apply the remaining pending under the same policy, translated to
 *     the local version, recapturing them
 *
 * The step (step.ts) then advances the cursor: it alone writes it.
 */
export interface RebaseResult {
  conflicts: ConflictRecord[];
  /** Entries that changed the local view (own entries consumed in place do not). */
  applied: number;
  /** Entries skipped because SQLite could not apply them (recorded as "corrupt" conflicts). */
  skipped: number;
  /** Values of pending writes that a migration dropped (their column or table is gone). */
  dropped: Dropped[];
}

export function rebase(d: Driver, me: string, entries: readonly LogEntry[], policy: ConflictOptions, schema: SchemaCache, versions: SchemaState): RebaseResult {
  const result: RebaseResult = { conflicts: [], applied: 0, skipped: 0, dropped: [] };
  if (entries.length === 0) return result;
  // At most entries.length pending rows can be consumed by the fast path
  // below: reading the whole outbox (blobs and all) for every page made a live
  // writer's cost per entry grow with its backlog.
  let pending = outbox.pending(d, entries.length);
  const i = confirmedPrefix(me, entries, pending, versions.local());
  for (const e of entries.slice(0, i)) {
    if (e.schema) versions.fromLog(e); // a version this replica has: checked, and the log is at it
    else outbox.dequeue(d, e.cseq);
  }
  const rest = entries.slice(i);
  if (rest.length > 0) {
    pending = outbox.pending(d);
    undo(d, pending);
    for (let k = 0; k < rest.length; ) {
      if (rest[k]!.schema) {
        // A version this replica already has changes nothing here.
        if (versions.fromLog(rest[k]!)) result.applied++;
        schema.clear();
        k++;
        continue;
      }
      // A run of data entries captured under one schema version.
      let end = k + 1;
      while (end < rest.length && !rest[end]!.schema && (rest[end]!.v ?? 0) === (rest[k]!.v ?? 0)) end++;
      const run = rest.slice(k, end);
      k = end;
      pending = applyRun(d, me, run, policy, schema, versions, pending, result);
    }
    result.dropped = redo(d, me, pending, policy, schema, versions).dropped;
  }
  return result;
}

/** Data entries of one schema version, in log order; returns the pending entries still pending. */
function applyRun(d: Driver, me: string, run: readonly LogEntry[], policy: ConflictOptions, schema: SchemaCache, versions: SchemaState, pending: OutboxRow[], result: RebaseResult): OutboxRow[] {
  const local = versions.local();
  const v = run[0]!.v ?? 0;
  // Entries of a log without schema entries (0) have no recorded shape: as they are.
  const bytes = v === local || v === 0 ? run.map((e) => e.changeset) : run.map((e) => translate(d, versions, e.changeset, v, local).changeset);
  // Most pages conflict with nothing: then they go in as one changeset.
  const clean = run.length > 1 && applyAllClean(d, bytes, schema);
  run.forEach((e, n) => {
    try {
      if (!clean) result.conflicts.push(...applyWithPolicy(d, bytes[n]!, e, policy, schema));
      result.applied++;
    } catch (err) {
      // A poison entry (valid in form, but SQLite refuses it) is skipped the
      // same way on every replica, so they keep converging. A schema
      // mismatch is ours to fix, not the entry's, and so is a full disk:
      // they stop the sync.
      // After some errors (FULL, IOERR, NOMEM) SQLite rolls back the whole
      // transaction: going on would apply the rest outside of it.
      if (!isEntryFault(err) || !d.inTransaction) throw err;
      result.conflicts.push({ kind: "corrupt", table: "", op: "insert", pk: [], local: null, incoming: { old: null, new: null }, seq: e.seq, client: e.client, cseq: e.cseq, resolution: "omit" });
      result.skipped++;
    }
    if (e.client === me) {
      outbox.dequeue(d, e.cseq);
      pending = pending.filter((p) => p.cseq !== e.cseq);
    }
  });
  return pending;
}

/**
 * Re-apply pending entries on top of what the log gave, under the policy,
 * each translated to the local schema version, and recapture what each now
 * holds. An entry's bytes may be rewritten when they are not fixed: it was
 * never sent, or the log is past the version it was captured under (so the
 * relay never took it and never will). Returns what translation dropped
 * from entries so rewritten, and the conflicts met (a rebase leaves them:
 * the log's entries are what it records).
 */
export function redo(d: Driver, me: string, pending: readonly OutboxRow[], policy: ConflictOptions, schema: SchemaCache, versions: SchemaState): { dropped: Dropped[]; conflicts: ConflictRecord[] } {
  const local = versions.local();
  const dropped: Dropped[] = [];
  const conflicts: ConflictRecord[] = [];
  for (const p of pending) {
    const rewrite = !p.sent || p.v < versions.log();
    let bytes = p.changeset;
    if (p.v !== local && p.v !== 0) {
      const t = translate(d, versions, p.changeset, p.v, local);
      bytes = t.changeset;
      if (rewrite) dropped.push(...t.dropped.map((x) => ({ cseq: p.cseq, ...x })));
    }
    const session = d.session(schema.replicated.sessionTables());
    try {
      conflicts.push(...applyWithPolicy(d, bytes, { seq: 0, client: me, cseq: p.cseq }, policy, schema));
      outbox.recapture(d, p, session.changeset(), rewrite ? local : undefined);
    } finally {
      session.close();
    }
  }
  return { dropped, conflicts };
}

/**
 * How many leading entries are our own pending ones, in capture order and
 * byte for byte, before anything foreign: they are already in the local view
 * exactly as the log has them (each pending entry was captured on top of the
 * confirmed state plus the ones before it), so the undo/redo round trip would
 * change nothing and is skipped. Schema entries of versions the local tables
 * already have (`version` or older) change no table, so the prefix goes on
 * past them: a fresh replica's first push is its schema and its writes, and
 * without this its first sync undid and redid every write (a 100,000-row
 * insert: ~150 ms). The caller still checks each against its own (fromLog).
 */
export function confirmedPrefix(me: string, entries: readonly LogEntry[], pending: readonly OutboxRow[], version?: number): number {
  let i = 0;
  for (let j = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.schema) {
      if (version === undefined || (e.v ?? 0) > version) break;
      continue;
    }
    const p = pending[j++];
    // `applied` is in the local tables' shape (`version`): the same bytes under another version are not the same change.
    if (!p || e.client !== me || e.cseq !== p.cseq || (version !== undefined && (e.v ?? 0) !== version) || !sameBytes(e.changeset, p.applied)) break;
  }
  return i;
}

/** The highest cseq of ours among `entries` (0 if none). */
export function lastOwnCseq(me: string, entries: readonly LogEntry[]): number {
  return entries.reduce((m, e) => (e.client === me ? Math.max(m, e.cseq) : m), 0);
}

/**
 * Undo what pending entries hold locally, newest first; must restore the
 * confirmed state whatever it meets: it is our own inverse. `applied` is
 * empty when a sent entry's re-application changed nothing (another entry
 * already did the same), and an empty changeset has no inverse to compute.
 */
export function undo(d: Driver, pending: readonly OutboxRow[]): void {
  for (let i = pending.length - 1; i >= 0; i--) {
    const applied = pending[i]!.applied;
    if (applied.byteLength === 0) continue;
    d.applyChangeset(invertChangeset(applied), (t) => (t === CONFLICT.DATA || t === CONFLICT.CONFLICT ? RESOLUTION.REPLACE : RESOLUTION.OMIT));
  }
}
