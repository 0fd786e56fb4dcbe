import type { Change, SqlValue, TableHeader } from "../protocol/changeset.ts";
export { sha256Hex } from "../protocol/hash.ts";
import { encodeChangeset } from "./changeset-writer.ts";
import type { Driver } from "./drivers/types.ts";
import { RelayError } from "./errors.ts";
import * as outbox from "./outbox.ts";
import { redo, undo, type RebaseResult } from "./rebase.ts";
import type { SchemaCache } from "./apply.ts";
import type { ConflictOptions } from "./conflicts.ts";
import { RESOLUTION } from "./drivers/types.ts";
import { translate } from "./translate.ts";
import type { SchemaState } from "./migrate.ts";
import * as store from "./store.ts";
import type { Tables } from "./tables.ts";

/**
 * Canonical snapshots (DESIGN.md "Snapshots and compaction"): the confirmed
 * state of every replicated table at the cursor as one changeset of INSERTs,
 * tables by name and rows by primary key, so that the same state gives the
 * same bytes (and SHA-256) on every driver, however the replica got there.
 *
 * Not the session extension's changeset: a session orders rows by its hash
 * table, not by key. Our own writer over rows read in key order is the one
 * way to canonical bytes. Applying one is the real SQLite apply (applySnapshot).
 */
export interface Snapshot {
  /** The log position this is the state at. */
  seq: number;
  /** The log's schema version at `seq` (the tables' shape). */
  version: number;
  bytes: Uint8Array;
  /** Lower-case hex SHA-256 of `bytes`. */
  hash: string;
}

const quote = (id: string) => `"${id.replace(/"/g, '""')}"`;

/**
 * The confirmed state's canonical changeset. Pending local writes are undone
 * inside a transaction that is always rolled back (their own inverse, as the
 * sync step undoes them), so the local view is untouched. Refused while the
 * local tables are at a schema version the log does not have yet: that state
 * has no place in the log.
 */
export function confirmedState(d: Driver, cursor: number, versions: SchemaState, tables: Tables): { seq: number; version: number; bytes: Uint8Array } {
  if (versions.local() !== versions.log()) {
    throw new RelayError("snapshot_unavailable", `the local tables are at schema version ${versions.local()}, the log at ${versions.log()}: sync first`);
  }
  const fk = store.foreignKeys(d);
  if (fk) store.setForeignKeys(d, false);
  try {
    d.exec("BEGIN IMMEDIATE");
    undo(d, outbox.pending(d));
    return { seq: cursor, version: versions.log(), bytes: canonicalBytes(d, tables.at(store.schemaVersion(d)).replicated) };
  } finally {
    if (d.inTransaction) d.exec("ROLLBACK");
    if (fk) store.setForeignKeys(d, true);
  }
}

/** The rows of `replicated` as INSERTs: tables by name, rows by primary key; empty tables left out. Local-only tables never replicate, so they are not part of the state. */
export function canonicalBytes(d: Driver, replicated: readonly string[]): Uint8Array {
  const tables: TableHeader[] = [];
  const changes: Change[] = [];
  for (const name of [...replicated].sort()) {
    const info = store.tableInfo(d, name)!;
    const cols = info.names.map(quote);
    const order = info.pk
      .map((p, i) => [p, i] as const)
      .filter(([p]) => p > 0)
      .sort((a, b) => a[0] - b[0])
      .map(([, i]) => cols[i]);
    // typeof(): a REAL such as 1.0 reads back as the JS number 1, which the writer would write as an INTEGER.
    // Aliased: a column named like an integer would come first in the row object.
    const sql = `SELECT ${cols.map((c, i) => `${c} AS c${i}`).join(", ")}, ${cols.map((c, i) => `typeof(${c}) = 'real' AS r${i}`).join(", ")} FROM ${quote(name)} ORDER BY ${order.join(", ")}`;
    const n = cols.length;
    const table: TableHeader = { name, pk: info.pk.map((p) => p > 0), pkRaw: Uint8Array.from(info.pk) };
    let any = false;
    for (const row of d.all(sql)) {
      const all = Object.values(row) as SqlValue[];
      const values = all.slice(0, n);
      const reals = all.slice(n).flatMap((isReal, i) => (isReal === 1 ? [i] : []));
      changes.push({ table, op: "insert", indirect: false, old: undefined, new: values, ...(reals.length > 0 ? { integralReals: { old: [], new: reals } } : {}) });
      any = true;
    }
    if (any) tables.push(table);
  }
  return encodeChangeset({ tables, changes });
}

/** A snapshot to reset onto, with what the relay says goes with it. */
export interface SnapshotToApply {
  seq: number;
  version: number;
  bytes: Uint8Array;
  /** The log's schema versions up to `seq`, in order (schema entries are never trimmed). */
  schema: readonly { seq: number; version: number; statements: string[] }[];
  /** The highest cseq of this replica's that the relay compacted: those entries are in the snapshot. */
  ownCseq: number;
}

/**
 * Inside the sync step's transaction (step.ts reset): undo pending, empty
 * the replicated tables, run the log's schema versions up to the snapshot
 * (those this replica lacks), apply the snapshot with SQLite's apply, then
 * re-apply the pending writes the log does not already hold (invariant 6).
 * The conflict log is left alone.
 */
export function resetOnto(d: Driver, me: string, snap: SnapshotToApply, policy: ConflictOptions, schema: SchemaCache, versions: SchemaState, replicated: readonly string[]): RebaseResult {
  let pending = outbox.pending(d);
  undo(d, pending);
  for (const t of replicated) d.exec(`DELETE FROM ${quote(t)}`);
  for (const s of snap.schema) {
    if (s.version > versions.log()) versions.fromLog({ seq: s.seq, client: "", cseq: 0, changeset: new Uint8Array(0), ts: 0, v: s.version, schema: s.statements });
  }
  schema.clear();
  const local = versions.local();
  // An empty state has nothing to translate (and the empty changeset is not one the reader takes).
  const bytes = snap.version === local || snap.version === 0 || snap.bytes.byteLength === 0 ? snap.bytes : translate(d, versions, snap.bytes, snap.version, local).changeset;
  // Into empty tables: nothing can conflict, and anything that does is a broken snapshot.
  if (bytes.byteLength > 0 && !d.applyChangeset(bytes, () => RESOLUTION.ABORT)) {
    throw new RelayError("apply_failed", `the snapshot at seq ${snap.seq} does not apply to empty tables`);
  }
  for (const p of pending) if (p.cseq <= snap.ownCseq) outbox.dequeue(d, p.cseq);
  pending = pending.filter((p) => p.cseq > snap.ownCseq);
  // Conflicts redo meets are left, as a rebase leaves them: the log records its own.
  const { dropped } = redo(d, me, pending, policy, schema, versions);
  return { conflicts: [], applied: 1, skipped: 0, dropped };
}
