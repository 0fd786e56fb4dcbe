import { changesetTables } from "../protocol/changeset.ts";
import { RelayError } from "./errors.ts";
import type { PushEntry } from "../protocol/messages.ts";
import type { Driver, Params, Row } from "./drivers/types.ts";
import { nullKeyError } from "./null-keys.ts";
import * as outbox from "./outbox.ts";
import { checkEntrySize, goesInParts, type EntryLimits } from "./parts.ts";
import type { Step } from "./step.ts";
import * as store from "./store.ts";
import type { Tx } from "./types.ts";

/**
 * Capture: one local write transaction becomes exactly one changeset, queued
 * in the outbox in the same SQLite transaction (so a crash keeps both or
 * neither). A throw, or DDL, rolls the whole transaction back. Callers hold
 * the replica's local lock.
 */
export interface Captured<T> {
  result: T;
  /** The queued entry; undefined when the transaction changed nothing. */
  entry: PushEntry | undefined;
  /** The entry was marked sent: the caller sends it right after this returns. */
  direct: boolean;
  /**
   * The tables the transaction changed, for watches: its changeset's, and
   * every local table when it changed any row (local tables are not in the
   * changeset, and may be written by triggers).
   */
  tables: string[];
}

/**
 * `sendAtOnce`: whether the caller will send this entry as soon as it commits
 * (asked before COMMIT). `readOnly`: refuse the transaction if it writes a
 * replicated table (local tables stay writable). `limits`: what the relay
 * accepts (parts.ts); a larger changeset could never be pushed, so it never
 * commits.
 */
export async function capture<T>(
  d: Driver,
  step: Step,
  fn: (tx: Tx) => Promise<T> | T,
  sendAtOnce: (entry: PushEntry) => boolean,
  { readOnly = false, limits }: { readOnly?: boolean; limits?: EntryLimits } = {},
): Promise<Captured<T>> {
  d.exec("BEGIN IMMEDIATE");
  // Read before and after (~1-2 µs each): DDL reaches the connection outside
  // capture too (query(), migrations, the step's trigger guards), so a
  // remembered version could not tell whether this transaction changed it.
  const schema = store.schemaVersion(d);
  const { fns, tables } = step.sql;
  // Local tables (virtual, shadow, declared) are not recorded at all.
  const session = d.session(tables.at(schema).sessionTables());
  let done = false;
  let changes = 0;
  const tx: Tx = {
    exec: async (sql, params) => {
      if (done) throw new RelayError("closed", "transaction already finished");
      // The driver counts the statement's own rows (SQLite's changes()): no query for it.
      let n: number;
      try {
        n = d.run(sql, params).changes;
      } catch (e) {
        throw nullKeyError(e);
      }
      changes += n;
      return { changes: n };
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
      throw new RelayError("ddl_outside_schema", "schema changes go through the `migrations` option (a new version), which replicates them: DDL in a transaction does not");
    }
    const changeset = session.changeset();
    session.close();
    // Written after the changeset was taken, like every internal table.
    fns.save(d);
    const local = changes > 0 || changeset.byteLength > 0 ? tables.local : [];
    if (changeset.byteLength === 0) {
      d.exec("COMMIT");
      return { result, entry: undefined, direct: false, tables: [...local] };
    }
    if (readOnly) throw new RelayError("read_only", "this replica is read-only (its token's role is read): writes to replicated tables are refused");
    // The codec refuses what the relay would refuse, and SQLite's session
    // does write some of it: an ANALYZE inside the transaction records
    // sqlite_stat1 rows; changing a key's type only (1 → 1.0) records an
    // UPDATE of no other column, which fails on every replica. Refused now
    // (invariant 8), not at push time where it would block the outbox.
    // ~0.2 µs for a one-row changeset. The same pass lists its tables.
    const changed = changesetTables(changeset).map((t) => t.name);
    if (limits) checkEntrySize(changeset, limits);
    const entry = { cseq: step.nextCseq(), changeset, v: step.versions.local() };
    // Sent right after COMMIT, so marked sent in the same transaction: that
    // spares a flush its query, its second write (a second commit, an fsync
    // on a file database) and a turn of the lock.
    const direct = sendAtOnce(entry);
    // An entry that goes in parts is marked sent now: marking it later rewrites its row (both copies of the changeset).
    outbox.enqueue(d, entry, direct || (limits !== undefined && goesInParts(changeset.byteLength, limits)));
    step.numbered(entry.cseq);
    d.exec("COMMIT");
    return { result, entry, direct, tables: [...changed, ...local] };
  } catch (e) {
    done = true;
    session.close();
    if (d.inTransaction) d.exec("ROLLBACK");
    step.forget();
    throw e;
  }
}

/** Drivers hand out null-prototype rows (node:sqlite's shape); users get ordinary objects. */
export function plain<T>(rows: Row[]): T[] {
  return rows.map((r) => ({ ...r }) as T);
}
