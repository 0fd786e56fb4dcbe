import { validateChangeset } from "../protocol/changeset.ts";
import { RelayError } from "./errors.ts";
import type { PushEntry } from "../protocol/messages.ts";
import type { Driver, Params, Row } from "./drivers/types.ts";
import * as outbox from "./outbox.ts";
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
}

/**
 * `sendAtOnce`: whether the caller will send this entry as soon as it commits
 * (asked before COMMIT). `maxBytes`: the largest changeset the relay accepts;
 * a larger one could never be pushed, so it never commits.
 */
export async function capture<T>(d: Driver, step: Step, fn: (tx: Tx) => Promise<T> | T, sendAtOnce: (entry: PushEntry) => boolean, maxBytes = Infinity): Promise<Captured<T>> {
  d.exec("BEGIN IMMEDIATE");
  const schema = store.schemaVersion(d);
  const session = d.session();
  let done = false;
  const exec = statements(d);
  const tx: Tx = {
    exec: async (sql, params) => {
      if (done) throw new RelayError("closed", "transaction already finished");
      return { changes: exec(sql, params) };
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
      throw new RelayError("ddl_outside_schema", "schema changes must go through the `schema` option: DDL is not replicated");
    }
    const changeset = session.changeset();
    session.close();
    if (changeset.byteLength === 0) {
      d.exec("COMMIT");
      return { result, entry: undefined, direct: false };
    }
    // The codec refuses what the relay would refuse (internal tables,
    // changesets SQLite cannot apply): better now than at push time.
    validateChangeset(changeset);
    if (changeset.byteLength > maxBytes) {
      throw new RelayError("write_too_large", `this transaction's changeset is ${changeset.byteLength} bytes; the relay accepts at most ${maxBytes}: nothing was written`);
    }
    const entry = { cseq: step.nextCseq(), changeset };
    // Sent right after COMMIT, so marked sent in the same transaction: that
    // spares a flush its query, its second write (a second commit, an fsync
    // on a file database) and a turn of the lock.
    const direct = sendAtOnce(entry);
    outbox.enqueue(d, entry.cseq, changeset, direct);
    step.numbered(entry.cseq);
    d.exec("COMMIT");
    return { result, entry, direct };
  } catch (e) {
    done = true;
    session.close();
    if (d.inTransaction) d.exec("ROLLBACK");
    step.forget();
    throw e;
  }
}

/**
 * Runs one statement and returns the rows it changed: the one place capture
 * asks the driver how a statement went. Only this transaction's statements
 * change the count while it holds the lock, so each statement's "after" is
 * the next one's "before": one total_changes() query per statement instead
 * of two (they were a third of a bulk insert's time). Not combined with the
 * schema version: that needs the pragma table function, three times slower
 * than both apart.
 */
function statements(d: Driver): (sql: string, params?: Params) => number {
  let total = store.totalChanges(d);
  return (sql, params) => {
    if (params === undefined) d.exec(sql);
    else d.run(sql, params);
    const before = total;
    total = store.totalChanges(d);
    return total - before;
  };
}

/** Drivers hand out null-prototype rows (node:sqlite's shape); users get ordinary objects. */
export function plain<T>(rows: Row[]): T[] {
  return rows.map((r) => ({ ...r }) as T);
}
