import type { DatabaseSync, SQLInputValue, SQLOutputValue, StatementSync } from "node:sqlite";
import type { SqlValue } from "../../protocol/changeset.ts";
import { RelayError } from "../errors.ts";
import { checkResolution, narrow, RESOLUTION, type ConflictType, type Driver, type Params, type Resolution, type Row, type Session } from "./types.ts";

/** Prepared statements kept per connection; the sync engine reuses a few dozen at most. */
const STATEMENT_CACHE_SIZE = 64;

/** Opens a node:sqlite database: a file path, or ":memory:". */
export function openNode(path: string): Driver {
  // Loaded at run time rather than imported, so that bundlers targeting the
  // browser never have to resolve node:sqlite.
  const { DatabaseSync } = process.getBuiltinModule("node:sqlite");
  const persistent = path !== ":memory:" && path !== "";
  const db = new DatabaseSync(path, { enableForeignKeyConstraints: true });
  db.exec("PRAGMA foreign_keys = ON");
  // WAL with FULL sync: a committed transaction (data + outbox) survives power loss.
  if (persistent) db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL");
  return new NodeDriver(db, persistent);
}

class NodeDriver implements Driver {
  readonly kind = "node";
  readonly persistent: boolean;
  #db: DatabaseSync;
  #statements = new Map<string, StatementSync>();
  #closed = false;

  constructor(db: DatabaseSync, persistent: boolean) {
    this.#db = db;
    this.persistent = persistent;
  }

  get inTransaction(): boolean {
    return this.#db.isTransaction;
  }

  exec(sql: string): void {
    this.#db.exec(sql);
  }

  run(sql: string, params?: Params): { changes: number; lastInsertRowid: number | bigint } {
    const stmt = this.#prepare(sql);
    const r = params === undefined ? stmt.run() : isPositional(params) ? stmt.run(...params.map(toNode)) : stmt.run(namedToNode(params));
    return { changes: Number(r.changes), lastInsertRowid: narrow(BigInt(r.lastInsertRowid)) };
  }

  all(sql: string, params?: Params): Row[] {
    const stmt = this.#prepare(sql);
    const rows = params === undefined ? stmt.all() : isPositional(params) ? stmt.all(...params.map(toNode)) : stmt.all(namedToNode(params));
    for (const row of rows) fromNode(row);
    return rows as Row[];
  }

  session(): Session {
    const s = this.#db.createSession();
    let open = true;
    return {
      changeset: () => s.changeset(),
      // node:sqlite already deleted the session if the database was closed.
      close: () => {
        if (open && !this.#closed) s.close();
        open = false;
      },
    };
  }

  applyChangeset(changeset: Uint8Array, onConflict: (type: ConflictType) => Resolution): boolean {
    // An exception must not unwind through SQLite: abort the apply, rethrow after.
    let thrown: { error: unknown } | undefined;
    const handler = (type: number): number => {
      try {
        return checkResolution(onConflict(type as ConflictType));
      } catch (error) {
        thrown ??= { error };
        return RESOLUTION.ABORT;
      }
    };
    let ok: boolean;
    try {
      ok = this.#db.applyChangeset(changeset, { onConflict: handler });
    } catch (cause) {
      if (thrown) throw thrown.error;
      throw new RelayError("apply_failed", `changeset apply failed: ${(cause as Error).message}`, { cause });
    }
    if (thrown) throw thrown.error;
    return ok;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#statements.clear();
    this.#db.close(); // also deletes open sessions
  }

  #prepare(sql: string): StatementSync {
    let stmt = this.#statements.get(sql);
    if (stmt) {
      this.#statements.delete(sql); // re-insert: Map order is the LRU order
    } else {
      stmt = this.#db.prepare(sql);
      // Read every integer exactly; fromNode narrows the safe ones back to number.
      stmt.setReadBigInts(true);
      if (this.#statements.size >= STATEMENT_CACHE_SIZE) {
        // node:sqlite has no finalize(); dropping the reference lets GC do it.
        this.#statements.delete(this.#statements.keys().next().value!);
      }
    }
    this.#statements.set(sql, stmt);
    return stmt;
  }
}

function isPositional(params: Params): params is readonly SqlValue[] {
  return Array.isArray(params);
}

/**
 * node:sqlite binds every JS number as REAL; sqlite-wasm binds integral ones as
 * INTEGER. Storage classes end up in changesets, so both drivers must agree:
 * safe integers bind as INTEGER here too.
 */
function toNode(v: SqlValue): SQLInputValue {
  return typeof v === "number" && Number.isSafeInteger(v) ? BigInt(v) : v;
}

function namedToNode(params: Readonly<Record<string, SqlValue>>): Record<string, SQLInputValue> {
  const out: Record<string, SQLInputValue> = {};
  for (const key in params) out[key] = toNode(params[key]!);
  return out;
}

/** Integers as number when exact, else bigint: what sqlite-wasm returns. */
function fromNode(row: Record<string, SQLOutputValue>): void {
  for (const key in row) {
    const v = row[key];
    if (typeof v === "bigint") row[key] = narrow(v);
  }
}



