import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import type { Sql, SqlValue } from "../../worker/log-store.ts";

/**
 * node:sqlite standing in for a Durable Object's `ctx.storage.sql`, so the
 * log's rules (worker/log-store.ts) run in plain unit tests over a real SQLite.
 * Kept to what the DO does, where our code could tell the difference:
 * - a statement that returns no rows runs at once; one that returns rows is
 *   a lazy, single-pass cursor (iterating it again yields nothing);
 * - `one()` throws unless exactly one row is left;
 * - BLOBs come back as ArrayBuffer, not Uint8Array;
 * - several statements in one call run when there are no bindings (the
 *   cursor is then empty: the DO returns the last statement's rows, and no
 *   caller of ours reads them).
 */
export function doSql(db = new DatabaseSync(":memory:")): Sql & { db: DatabaseSync; transactionSync<T>(fn: () => T): T } {
  return {
    db,
    exec<T extends Record<string, SqlValue>>(query: string, ...bindings: unknown[]) {
      const rows = run(db, query, bindings) as Iterator<T>;
      const cursor = {
        [Symbol.iterator]: () => cursor,
        next: () => rows.next(),
        toArray: () => Array.from(cursor),
        one(): T {
          const all = cursor.toArray();
          if (all.length !== 1) throw new Error(`Expected exactly one result from SQL query, but got ${all.length === 0 ? "no" : "multiple"} results.`);
          return all[0]!;
        },
      };
      return cursor;
    },
    /** Like `ctx.storage.transactionSync`: commits when `fn` returns, rolls back whole when it throws. */
    transactionSync<T>(fn: () => T): T {
      db.exec("BEGIN");
      try {
        const out = fn();
        db.exec("COMMIT");
        return out;
      } catch (e) {
        db.exec("ROLLBACK");
        throw e;
      }
    },
  };
}

function run(db: DatabaseSync, query: string, bindings: unknown[]): Iterator<Record<string, SqlValue>> {
  if (bindings.length === 0 && /;\s*\S/.test(query.trim().replace(/;$/, ""))) {
    db.exec(query);
    return [][Symbol.iterator]();
  }
  const stmt = db.prepare(query);
  const args = bindings as SQLInputValue[];
  if (stmt.columns().length === 0) {
    stmt.run(...args);
    return [][Symbol.iterator]();
  }
  const it = stmt.iterate(...args);
  return {
    next() {
      const r = it.next();
      if (r.done) return { done: true, value: undefined };
      const row: Record<string, SqlValue> = {};
      for (const [k, v] of Object.entries(r.value as Record<string, unknown>)) {
        row[k] = v instanceof Uint8Array ? (v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength) as ArrayBuffer) : (v as SqlValue);
      }
      return { done: false, value: row };
    },
  };
}
