import { sameBytes } from "../protocol/codec.ts";
import { invertChangeset } from "./changeset-writer.ts";
import type { LogEntry } from "../protocol/messages.ts";
import { applyAllClean, applyWithPolicy, isEntryFault, type SchemaCache } from "./apply.ts";
import type { ConflictOptions, ConflictRecord } from "./conflicts.ts";
import { CONFLICT, RESOLUTION, type Driver } from "./drivers/types.ts";
import * as outbox from "./outbox.ts";
import type { OutboxRow } from "./outbox.ts";

/**
 * Rebase, the body of a sync step over log entries (DESIGN.md invariant 6).
 * The caller runs it inside one local write transaction and rolls back on any
 * throw, so the database is either fully advanced or exactly as before.
 *
 *   undo pending (inverse of what each holds locally, newest first)
 *   → apply pulled entries in log order (own entries leave the outbox)
 *   → re-apply the remaining pending under the same policy, recapturing them
 *
 * The step (step.ts) then advances the cursor: it alone writes it.
 */
export interface RebaseResult {
  conflicts: ConflictRecord[];
  /** Entries that changed the local view (own entries consumed in place do not). */
  applied: number;
  /** Entries skipped because SQLite could not apply them (recorded as "corrupt" conflicts). */
  skipped: number;
}

export function rebase(d: Driver, me: string, entries: readonly LogEntry[], policy: ConflictOptions, schema: SchemaCache): RebaseResult {
  const result: RebaseResult = { conflicts: [], applied: 0, skipped: 0 };
  if (entries.length === 0) return result;
  // At most entries.length pending rows can be consumed by the fast path
  // below: reading the whole outbox (blobs and all) for every page made a live
  // writer's cost per entry grow with its backlog.
  let pending = outbox.pending(d, entries.length);
  const i = confirmedPrefix(me, entries, pending);
  for (const p of pending.slice(0, i)) outbox.dequeue(d, p.cseq);
  const rest = entries.slice(i);
  if (rest.length > 0) {
    pending = outbox.pending(d);
    for (const p of [...pending].reverse()) undo(d, p.applied);
    // Most pages conflict with nothing: then they go in as one changeset.
    const clean = rest.length > 1 && applyAllClean(d, rest.map((e) => e.changeset), schema);
    for (const e of rest) {
      try {
        if (!clean) result.conflicts.push(...applyWithPolicy(d, e.changeset, e, policy, schema));
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
    }
    reapply(d, me, pending, policy, schema);
  }
  return result;
}

/** Re-apply pending entries on top of the current state, recapturing what each now holds; the conflicts met. */
export function reapply(d: Driver, me: string, pending: readonly OutboxRow[], policy: ConflictOptions, schema: SchemaCache): ConflictRecord[] {
  const conflicts: ConflictRecord[] = [];
  for (const p of pending) {
    const session = d.session();
    try {
      conflicts.push(...applyWithPolicy(d, p.changeset, { seq: 0, client: me, cseq: p.cseq }, policy, schema));
      outbox.recapture(d, p, session.changeset());
    } finally {
      session.close();
    }
  }
  return conflicts;
}

/**
 * How many leading entries are our own pending ones, in capture order and
 * byte for byte, before anything foreign: they are already in the local view
 * exactly as the log has them (each pending entry was captured on top of the
 * confirmed state plus the ones before it), so the undo/redo round trip would
 * change nothing and is skipped.
 */
export function confirmedPrefix(me: string, entries: readonly LogEntry[], pending: readonly OutboxRow[]): number {
  let i = 0;
  while (i < entries.length && i < pending.length) {
    const e = entries[i]!, p = pending[i]!;
    if (e.client !== me || e.cseq !== p.cseq || !sameBytes(e.changeset, p.applied)) break;
    i++;
  }
  return i;
}

/** The highest cseq of ours among `entries` (0 if none). */
export function lastOwnCseq(me: string, entries: readonly LogEntry[]): number {
  return entries.reduce((m, e) => (e.client === me ? Math.max(m, e.cseq) : m), 0);
}

/**
 * Undo what a pending entry holds locally; must restore the confirmed state
 * whatever it meets: it is our own inverse. `applied` is empty when a sent
 * entry's re-application changed nothing (another entry already did the same),
 * and an empty changeset has no inverse to compute.
 */
export function undo(d: Driver, applied: Uint8Array): void {
  if (applied.byteLength === 0) return;
  d.applyChangeset(invertChangeset(applied), (t) => (t === CONFLICT.DATA || t === CONFLICT.CONFLICT ? RESOLUTION.REPLACE : RESOLUTION.OMIT));
}
