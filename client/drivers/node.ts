import type { DatabaseSync, SQLInputValue, SQLOutputValue, StatementSync } from "node:sqlite";
import type { SqlValue } from "../../protocol/changeset.ts";
import { RelayError } from "../errors.ts";
import { StatementCache } from "./cache.ts";
import { checkResolution, narrow, RESOLUTION, type ConflictType, type Driver, type Params, type Resolution, type Row, type Session, type Write, WRITE_ACTIONS } from "./types.ts";

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

/**
 * A cached statement. `writes`: whether running it sets sqlite3_changes()
 * (INSERT, UPDATE, DELETE), which other statements leave at the previous
 * value; undefined when this Node cannot tell (no setAuthorizer). `tail`: the
 * SQL after the first statement when it holds more statements.
 */
interface Prepared {
  stmt: StatementSync;
  writes: boolean | undefined;
  /** The tables it reads (SQLITE_READ), views resolved to their base tables; undefined without setAuthorizer. */
  reads: string[] | undefined;
  tail: string;
}

/** Authorizer action codes (sqlite3.h) for schema changes (which write sqlite_schema rows); WRITE_ACTIONS for rows. */
const READ = 20; // SQLITE_READ: arg 1 is the table, also for the base tables of a view
const DDL_ACTIONS: ReadonlySet<number> = new Set([1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 26, 29, 30]);

class NodeDriver implements Driver {
  readonly kind = "node";
  readonly persistent: boolean;
  #db: DatabaseSync;
  // node:sqlite has no finalize(); dropping the reference lets GC do it.
  #statements = new StatementCache<Prepared>(() => {});
  /** Only where setAuthorizer is missing (Node < 24.10): changes are then told apart with total_changes(). */
  #totalChanges: StatementSync | undefined;
  #lastInsertRowid: number | bigint = 0;
  #closed = false;
  /** Set only while writesOf compiles: every write the authorizer reports, triggers' included. */
  #onWrite: ((table: string, trigger: string | null) => void) | undefined;

  constructor(db: DatabaseSync, persistent: boolean) {
    this.#db = db;
    this.persistent = persistent;
  }

  get inTransaction(): boolean {
    return this.#db.isTransaction;
  }

  exec(sql: string): void {
    try {
      this.run(sql);
    } catch (e) {
      // Nothing but comments: nothing to run, as for sqlite3_exec.
      if ((e as { code?: string }).code !== "ERR_INVALID_ARG_VALUE") throw e;
    }
  }

  run(sql: string, params?: Params): { changes: number; lastInsertRowid: number | bigint } {
    let prepared = this.#prepare(sql);
    if (prepared.tail !== "" && params !== undefined) throw new RangeError("parameters bind to one statement: this SQL holds several");
    let changes = this.#runOne(prepared, params);
    // A script: the rest runs one statement at a time, each prepared after the
    // one before ran (it may create what the next uses), as sqlite3_exec does.
    while (prepared.tail !== "") {
      prepared = this.#compile(prepared.tail);
      changes += this.#runOne(prepared, undefined);
    }
    return { changes, lastInsertRowid: this.#lastInsertRowid };
  }

  all(sql: string, params?: Params): Row[] {
    const { stmt } = this.#prepare(sql);
    const rows = params === undefined ? stmt.all() : isPositional(params) ? stmt.all(...params.map(toNode)) : stmt.all(namedToNode(params));
    for (const row of rows) fromNode(row);
    return rows as Row[];
  }

  session(tables?: readonly string[]): Session {
    // node:sqlite's session records one table or all of them: one session per
    // table, their changesets concatenated (a changeset is a list of table blocks).
    const sessions = tables === undefined ? [this.#db.createSession()] : tables.map((table) => this.#db.createSession({ table }));
    let open = true;
    return {
      changeset: () => {
        if (sessions.length === 1) return sessions[0]!.changeset();
        const parts = sessions.map((s) => s.changeset());
        const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
        let at = 0;
        for (const p of parts) {
          out.set(p, at);
          at += p.byteLength;
        }
        return out;
      },
      // node:sqlite already deleted the session if the database was closed.
      close: () => {
        if (open && !this.#closed) for (const s of sessions) s.close();
        open = false;
      },
    };
  }

  function(name: string, fn: (...args: SqlValue[]) => SqlValue): void {
    this.#db.function(name, { useBigIntArguments: true, varargs: true }, (...args: SQLOutputValue[]) => {
      const v = fn(...args.map((a) => (typeof a === "bigint" ? narrow(a) : (a as SqlValue))));
      return toNode(v);
    });
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

  tablesRead(sql: string): string[] | undefined {
    // Compiled afresh, not from the cache: a schema version can change what a statement reads (a view redefined).
    return this.#compile(sql).reads;
  }

  writesOf(sql: string): Write[] | undefined {
    if (typeof this.#db.setAuthorizer !== "function") return undefined;
    const out: Write[] = [];
    this.#onWrite = (table, trigger) => out.push({ table, trigger });
    try {
      this.#compile(sql); // not cached, never run: dropping it lets GC finalize it
    } finally {
      this.#onWrite = undefined;
    }
    return out;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#statements.clear();
    this.#db.close(); // also deletes open sessions
  }

  /** The rows one statement changed: SQLite's changes() when it writes rows, else 0 (changes() still holds the previous write's count). */
  #runOne({ stmt, writes }: Prepared, params: Params | undefined): number {
    const before = writes === undefined ? this.#total() : 0;
    const r = params === undefined ? stmt.run() : isPositional(params) ? stmt.run(...params.map(toNode)) : stmt.run(namedToNode(params));
    this.#lastInsertRowid = narrow(r.lastInsertRowid as bigint);
    if (writes === undefined) return this.#total() !== before ? Number(r.changes) : 0;
    return writes ? Number(r.changes) : 0;
  }

  #total(): bigint {
    if (!this.#totalChanges) {
      this.#totalChanges = this.#db.prepare("SELECT total_changes()");
      this.#totalChanges.setReadBigInts(true);
    }
    return (this.#totalChanges.get() as { "total_changes()": bigint })["total_changes()"];
  }

  #prepare(sql: string): Prepared {
    return this.#statements.get(sql, (text) => this.#compile(text));
  }

  /**
   * Prepares the first statement of `sql`. What it does comes from SQLite's
   * authorizer, which sees every action while the statement compiles (a
   * re-prepare after a schema change does not change what kind it is).
   */
  #compile(sql: string): Prepared {
    const db = this.#db;
    let writes: boolean | undefined;
    let reads: string[] | undefined;
    let stmt: StatementSync;
    if (typeof db.setAuthorizer === "function") {
      let write = false;
      let ddl = false;
      const read = new Set<string>();
      db.setAuthorizer((action, table, _b, _db, trigger) => {
        if (this.#onWrite && WRITE_ACTIONS.has(action)) this.#onWrite(table!, trigger);
        if (action === READ) read.add(table!);
        else if (trigger === null && WRITE_ACTIONS.has(action)) write = true;
        else if (DDL_ACTIONS.has(action)) ddl = true;
        return 0; // SQLITE_OK
      });
      try {
        stmt = db.prepare(sql);
      } finally {
        db.setAuthorizer(null);
      }
      writes = write && !ddl;
      reads = [...read];
    } else {
      stmt = db.prepare(sql);
    }
    // Read every integer exactly; fromNode narrows the safe ones back to number.
    stmt.setReadBigInts(true);
    return { stmt, writes, reads, tail: this.#tail(sql, stmt.sourceSQL) };
  }

  /**
   * The statements after the first one, "" when only comments follow.
   * sourceSQL is sqlite3_sql(), the first statement's text: as many UTF-16
   * units as it took of `sql` (an unpaired surrogate comes back as U+FFFD).
   */
  #tail(sql: string, first: string): string {
    const rest = sql.slice(first.length);
    if (rest.trim() === "") return "";
    try {
      this.#db.prepare(rest);
    } catch (e) {
      if ((e as { code?: string }).code === "ERR_INVALID_ARG_VALUE") return ""; // "contains no statements"
    }
    return rest; // more statements (or an error SQLite reports when they run)
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



