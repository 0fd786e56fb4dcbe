import type { Database, Sqlite3Static } from "@sqlite.org/sqlite-wasm";
import type { SqlValue } from "../../protocol/changeset.ts";
import { RelayError } from "../errors.ts";
import { StatementCache } from "./cache.ts";
import { checkResolution, narrow, RESOLUTION, type ConflictType, type Driver, type Params, type Resolution, type Row, type Session, type Write, WRITE_ACTIONS } from "./types.ts";
import { defaultVfs, DONE, loadSqliteWasm, READ, ROW, type Exports } from "./wasm-module.ts";
import { HeapValues } from "./wasm-values.ts";

export { installOpfsSahPool, loadSqliteWasm, type LoadOptions, type OpfsPoolOptions } from "./wasm-module.ts";

// No Node-only imports in this file: it also runs in a browser Web Worker.

/**
 * Opens ":memory:", or a file on a persistent VFS: `options.vfs`, else the one
 * `installOpfsSahPool` installed. The default VFS of the Node build keeps
 * files in memory, so a path without a VFS would silently lose data.
 */
export async function openWasm(path: string, options: { vfs?: string } = {}): Promise<Driver> {
  const sqlite3 = await loadSqliteWasm();
  const memory = path === ":memory:" || path === "";
  const vfs = memory ? options.vfs : (options.vfs ?? defaultVfs());
  if (!memory && vfs === undefined) {
    throw new Error(`wasm driver: "${path}" needs a persistent VFS; only ":memory:" works without one`);
  }
  // opfs-sahpool only recognises absolute paths.
  const filename = !memory && vfs !== undefined && !path.startsWith("/") ? `/${path}` : path;
  const db = new sqlite3.oo1.DB(vfs === undefined ? { filename } : { filename, vfs });
  const driver = new WasmDriver(sqlite3, db, !memory);
  if (!memory) persistentJournal(driver);
  driver.exec("PRAGMA foreign_keys = ON");
  return driver;
}

/**
 * WAL, as the node driver: one commit appends to one file instead of
 * creating, writing and deleting a rollback journal (on OPFS ~13 ms a commit
 * with the default journal, ~3 ms in WAL: bench/browser-journal.ts).
 * opfs-sahpool has no shared memory (xShmMap), so WAL works there only in
 * exclusive locking mode, set before the file is first read (the wal-index
 * then lives in this connection's heap; without it `journal_mode = WAL`
 * answers "delete" there, tried in Chromium); the pool already gives one
 * connection the file, so nothing is lost. synchronous=FULL: a commit is
 * flushed before it returns. Under NORMAL a commit the app (and perhaps the
 * relay) was told about could vanish after a power loss — a dropped write
 * (invariant 8), and cseqs reissued to different bytes (409 cseq_conflict).
 */
function persistentJournal(driver: WasmDriver): void {
  driver.exec("PRAGMA locking_mode = EXCLUSIVE");
  const mode = driver.all("PRAGMA journal_mode = WAL")[0]?.journal_mode;
  if (mode !== "wal") throw new Error(`wasm driver: the database would not switch to WAL (journal_mode is ${String(mode)})`);
  driver.exec("PRAGMA synchronous = FULL");
}

interface CachedStatement {
  p: number;
  /** Bare parameter names ("id") resolved to their index, see #bindNamed. */
  names: Map<string, number>;
  /** sqlite3_bind_parameter_count. */
  params: number;
  /** The SQL after the first statement when it holds more statements, else "". */
  tail: string;
  columns?: string[];
  /** SQLITE_STMTSTATUS_REPREPARE when `columns` was read. */
  prepares?: number;
}

const NO_STATEMENT = new Error("no SQL statement to run (empty or only comments)");

class WasmDriver implements Driver {
  readonly kind = "wasm";
  readonly persistent: boolean;
  #sqlite3: Sqlite3Static;
  #x: Exports;
  #db: Database;
  #p: number;
  #statements = new StatementCache<CachedStatement>((stmt) => this.#x.sqlite3_finalize(stmt.p));
  #sessions = new Set<number>();
  #closed = false;
  /** Bound parameters and read columns, through one reused heap buffer. */
  #values: HeapValues;
  /** Heap memory for out-pointers (two pointers). */
  #out: number;
  /** "main", as a C string for sqlite3session_create. */
  #main: number;
  /** The conflict callback, installed once (installing one compiles a WebAssembly module). */
  #xConflict: number;
  /** What the callback dispatches to: the current applyChangeset's handler. */
  #onConflict: (type: number) => number = () => RESOLUTION.ABORT;
  /** The authorizer callback, installed once like #xConflict; set on the connection only while #authorized prepares. */
  #xAuth: number;
  /** What the callback dispatches to: action code, arg 1, and the responsible trigger or view (C strings, 0 for none). */
  #onAuth: (action: number, arg1: number, trigger: number) => void = () => {};

  constructor(sqlite3: Sqlite3Static, db: Database, persistent: boolean) {
    const { wasm } = sqlite3;
    this.#sqlite3 = sqlite3;
    this.#x = wasm.exports as Exports;
    this.#db = db;
    this.#p = db.pointer!;
    this.persistent = persistent;
    this.#values = new HeapValues(sqlite3, this.#x);
    this.#out = wasm.alloc(16);
    this.#main = wasm.allocCString("main", false);
    this.#xConflict = wasm.installFunction("i(pip)", (_ctx: number, type: number, _iter: number) => this.#onConflict(type));
    this.#xAuth = wasm.installFunction("i(pipppp)", (_ctx: number, action: number, arg1: number, _arg2: number, _db: number, trigger: number) => {
      this.#onAuth(action, arg1, trigger);
      return 0; // SQLITE_OK
    });
  }

  get inTransaction(): boolean {
    this.#assertOpen(); // a closed connection's pointer is freed memory
    return this.#x.sqlite3_get_autocommit(this.#p) === 0;
  }

  exec(sql: string): void {
    try {
      this.run(sql);
    } catch (e) {
      if (e !== NO_STATEMENT) throw e; // nothing but comments: nothing to run, as for sqlite3_exec
    }
  }

  run(sql: string, params?: Params): { changes: number; lastInsertRowid: number | bigint } {
    let stmt = this.#prepare(sql);
    if (stmt.tail !== "" && params !== undefined) throw new RangeError("parameters bind to one statement: this SQL holds several");
    let changes = this.#runOne(stmt, params);
    // A script: the rest runs one statement at a time, each prepared after the
    // one before ran (it may create what the next uses), as sqlite3_exec does.
    while (stmt.tail !== "") {
      stmt = this.#compile(stmt.tail);
      try {
        changes += this.#runOne(stmt, undefined);
      } finally {
        this.#x.sqlite3_finalize(stmt.p);
      }
    }
    return { changes, lastInsertRowid: narrow(this.#x.sqlite3_last_insert_rowid(this.#p)) };
  }

  all(sql: string, params?: Params): Row[] {
    const x = this.#x;
    const stmt = this.#prepare(sql);
    const rows: Row[] = [];
    try {
      this.#bind(stmt, params);
      let names: string[] | undefined;
      let rc: number;
      while ((rc = x.sqlite3_step(stmt.p)) === ROW) {
        names ??= this.#columnNames(stmt);
        // Null prototype, like node:sqlite's rows (and safe for a column named "__proto__").
        const row: Row = Object.create(null);
        for (let i = 0; i < names.length; i++) row[names[i]!] = this.#values.column(stmt.p, i);
        rows.push(row);
      }
      if (rc !== DONE) this.#check(rc);
    } finally {
      x.sqlite3_reset(stmt.p);
    }
    return rows;
  }

  session(tables?: readonly string[]): Session {
    const { wasm } = this.#sqlite3;
    const x = this.#x;
    this.#assertOpen();
    this.#checkSession(x.sqlite3session_create(this.#p, this.#main, this.#out), "sqlite3session_create");
    const p = wasm.peekPtr(this.#out) as number;
    // A null table name: every table. SQLite copies a given name.
    for (const table of tables ?? [undefined]) {
      const name = table === undefined ? 0 : (wasm.allocCString(table, false) as number);
      const rc = x.sqlite3session_attach(p, name);
      if (name !== 0) wasm.dealloc(name);
      if (rc !== 0) {
        x.sqlite3session_delete(p);
        this.#checkSession(rc, "sqlite3session_attach");
      }
    }
    this.#sessions.add(p);
    return {
      changeset: () => {
        if (!this.#sessions.has(p)) throw new Error("session is not open");
        return this.#changeset(p);
      },
      close: () => {
        if (this.#sessions.delete(p)) x.sqlite3session_delete(p);
      },
    };
  }

  function(name: string, fn: (...args: SqlValue[]) => SqlValue): void {
    const { capi } = this.#sqlite3;
    this.#assertOpen();
    const call = (ctx: number, ...args: unknown[]): void => {
      try {
        // The same storage classes as the node driver: safe integers are INTEGER.
        const v = fn(...args.map((a) => (typeof a === "bigint" ? narrow(a) : (a as SqlValue))));
        if (typeof v === "number" && Number.isSafeInteger(v)) capi.sqlite3_result_int64(ctx, BigInt(v));
        else capi.sqlite3_result_js(ctx, v);
      } catch (e) {
        capi.sqlite3_result_error(ctx, e instanceof Error ? e.message : String(e), -1);
      }
    };
    // -1: any number of arguments; no SQLITE_DIRECTONLY, so triggers and DEFAULTs may call it.
    const rc = capi.sqlite3_create_function_v2(this.#p, name, -1, capi.SQLITE_UTF8, 0, call as never, 0, 0, 0);
    this.#check(rc);
  }

  applyChangeset(changeset: Uint8Array, onConflict: (type: ConflictType) => Resolution): boolean {
    const { capi, wasm } = this.#sqlite3;
    this.#assertOpen();
    // An exception must not unwind through SQLite's C frames: abort the apply, rethrow after.
    let thrown: { error: unknown } | undefined;
    let aborted = false;
    const outer = this.#onConflict; // a handler may apply a changeset of its own
    this.#onConflict = (type) => {
      try {
        const r = checkResolution(onConflict(type as ConflictType));
        if (r === RESOLUTION.ABORT) aborted = true;
        return r;
      } catch (error) {
        thrown ??= { error };
        return RESOLUTION.ABORT;
      }
    };
    const n = changeset.byteLength;
    const p = wasm.alloc(Math.max(n, 1)) as number;
    let rc: number;
    try {
      wasm.heap8u().set(changeset, p);
      // One call into C for the whole changeset; JS runs only on conflicts.
      rc = this.#x.sqlite3changeset_apply(this.#p, n, p, 0, this.#xConflict, 0);
    } finally {
      wasm.dealloc(p);
      this.#onConflict = outer;
    }
    if (thrown) throw thrown.error;
    if (rc === 0) return true;
    if (rc === capi.SQLITE_ABORT && aborted) return false;
    const cause = this.#error(rc);
    throw new RelayError("apply_failed", `changeset apply failed: ${cause.message}`, { cause });
  }

  tablesRead(sql: string): string[] {
    const reads = new Set<string>();
    this.#authorized(sql, (action, arg1) => {
      if (action === READ) reads.add(this.#cstr(arg1)!);
    });
    return [...reads];
  }

  writesOf(sql: string): Write[] {
    const out: Write[] = [];
    this.#authorized(sql, (action, arg1, trigger) => {
      if (WRITE_ACTIONS.has(action)) out.push({ table: this.#cstr(arg1)!, trigger: this.#cstr(trigger) });
    });
    return out;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const { wasm } = this.#sqlite3;
    const x = this.#x;
    // Sessions must be deleted before their connection is closed.
    for (const p of this.#sessions) x.sqlite3session_delete(p);
    this.#sessions.clear();
    this.#statements.clear();
    this.#db.close();
    wasm.uninstallFunction(this.#xConflict);
    wasm.uninstallFunction(this.#xAuth);
    this.#values.free();
    for (const p of [this.#out, this.#main]) wasm.dealloc(p);
  }

  /**
   * The rows one statement changed: SQLite's changes() when the statement
   * changed any (total_changes() moved), else 0: changes() still holds the
   * previous write's count after a SELECT or DDL.
   */
  #runOne(stmt: CachedStatement, params: Params | undefined): number {
    const x = this.#x;
    const total = x.sqlite3_total_changes(this.#p);
    try {
      this.#bind(stmt, params);
      let rc: number;
      while ((rc = x.sqlite3_step(stmt.p)) === ROW);
      if (rc !== DONE) this.#check(rc);
    } finally {
      x.sqlite3_reset(stmt.p); // the error, if any, was already reported by step
    }
    return x.sqlite3_total_changes(this.#p) !== total ? x.sqlite3_changes(this.#p) : 0;
  }

  /**
   * Prepares `sql` once more with the authorizer set, `onAuth` hearing it,
   * and finalizes it unrun (the authorizer reports while a statement
   * compiles, so a cached statement cannot tell). Set only for this prepare:
   * left on, it would be called from JS for every statement
   * sqlite3changeset_apply prepares on the hot path. Setting it expires the
   * cached statements, which re-prepare once: watches and trigger checks are rare.
   */
  #authorized(sql: string, onAuth: (action: number, arg1: number, trigger: number) => void): void {
    this.#assertOpen();
    const x = this.#x;
    this.#onAuth = onAuth;
    x.sqlite3_set_authorizer(this.#p, this.#xAuth, 0);
    try {
      const stmt = this.#compile(sql);
      x.sqlite3_finalize(stmt.p);
    } finally {
      x.sqlite3_set_authorizer(this.#p, 0, 0);
      this.#onAuth = () => {};
    }
  }

  #cstr(p: number): string | null {
    return p === 0 ? null : (this.#sqlite3.wasm.cstrToJs(p) as string);
  }

  #changeset(session: number): Uint8Array {
    const { wasm } = this.#sqlite3;
    const out = this.#out;
    this.#checkSession(this.#x.sqlite3session_changeset(session, out, out + 8), "sqlite3session_changeset");
    const n = wasm.peek32(out) as number;
    const p = wasm.peekPtr(out + 8) as number;
    // slice() copies out of the heap, which sqlite3_free may then reuse.
    const bytes = wasm.heap8u().slice(p, p + n);
    this.#x.sqlite3_free(p);
    return bytes;
  }

  #prepare(sql: string): CachedStatement {
    return this.#statements.get(sql, (text) => this.#compile(text));
  }

  /** Prepares the first statement of `sql`; the caller finalizes it. */
  #compile(sql: string): CachedStatement {
    this.#assertOpen();
    const { wasm } = this.#sqlite3;
    const [text, n] = wasm.allocCString(sql, true) as [number, number];
    try {
      const p = this.#prepareAt(text, n);
      if (p === 0) throw NO_STATEMENT;
      const used = (wasm.peekPtr(this.#out + 8) as number) - text;
      let tail = "";
      if (used < n) {
        // More than comments after it? Then it is a script (or an error SQLite reports when it runs).
        const next = this.#prepareAt(text + used, n - used, true);
        if (next > 0) this.#x.sqlite3_finalize(next);
        if (next !== 0) tail = this.#values.text(text + used, n - used);
      }
      return { p, names: new Map(), params: this.#sqlite3.capi.sqlite3_bind_parameter_count(p), tail };
    } finally {
      wasm.dealloc(text);
    }
  }

  /** sqlite3_prepare_v2 at a C string; the tail pointer lands at #out + 8. With `lenient`, an error is "a statement" (-1) rather than thrown. */
  #prepareAt(text: number, n: number, lenient = false): number {
    const rc = this.#x.sqlite3_prepare_v2(this.#p, text, n, this.#out, this.#out + 8);
    if (rc !== 0) {
      if (lenient) return -1;
      this.#check(rc);
    }
    return this.#sqlite3.wasm.peekPtr(this.#out) as number;
  }

  /** Cached: reading them costs more than a point query. Valid until a schema change re-prepares the statement. */
  #columnNames(stmt: CachedStatement): string[] {
    const { capi } = this.#sqlite3;
    const prepares = this.#x.sqlite3_stmt_status(stmt.p, 5, 0); // SQLITE_STMTSTATUS_REPREPARE
    if (stmt.columns === undefined || stmt.prepares !== prepares) {
      stmt.columns = [];
      for (let i = 0, n = capi.sqlite3_column_count(stmt.p); i < n; i++) stmt.columns.push(capi.sqlite3_column_name(stmt.p, i));
      stmt.prepares = prepares;
    }
    return stmt.columns;
  }

  #bind(stmt: CachedStatement, params: Params | undefined): void {
    // Unbound parameters are NULL on every run, as with node:sqlite. Bindings
    // are kept when every one is bound again: SQLite then reuses their memory.
    const p = stmt.p;
    if (params === undefined) {
      if (stmt.params > 0) this.#x.sqlite3_clear_bindings(p);
      return;
    }
    if (isPositional(params)) {
      if (params.length > stmt.params) this.#check(this.#sqlite3.capi.SQLITE_RANGE);
      if (params.length < stmt.params) this.#x.sqlite3_clear_bindings(p);
      for (let i = 0; i < params.length; i++) this.#check(this.#values.bind(p, i + 1, params[i]!));
      return;
    }
    this.#x.sqlite3_clear_bindings(p);
    for (const key in params) this.#check(this.#values.bind(p, this.#paramIndex(stmt, key), params[key]!));
  }

  /** Keys may carry the prefix (":id", "$id", "@id") or not ("id"), as node:sqlite allows. */
  #paramIndex(stmt: CachedStatement, key: string): number {
    let i = stmt.names.get(key);
    if (i === undefined) {
      const { capi } = this.#sqlite3;
      const candidates = /^[:$@]/.test(key) ? [key] : [`:${key}`, `$${key}`, `@${key}`];
      i = 0;
      for (const name of candidates) if ((i = capi.sqlite3_bind_parameter_index(stmt.p, name)) !== 0) break;
      if (i === 0) throw new Error(`Unknown named parameter '${key}'`);
      stmt.names.set(key, i);
    }
    return i;
  }

  #check(rc: number): void {
    if (rc !== 0) throw this.#error(rc);
  }

  #checkSession(rc: number, what: string): void {
    if (rc !== 0) throw Object.assign(new Error(`${what}: ${this.#sqlite3.capi.sqlite3_errstr(rc)}`), errorFields(this.#sqlite3, rc));
  }

  /** Shaped like node:sqlite's errors (code, errcode, errstr) so callers handle both drivers alike. */
  #error(rc: number): Error {
    const { capi } = this.#sqlite3;
    // The connection's error, when it is the one being reported, carries the detail and extended code.
    const extended = capi.sqlite3_extended_errcode(this.#p);
    const code = (extended & 0xff) === (rc & 0xff) ? extended : rc;
    const message = code === extended ? capi.sqlite3_errmsg(this.#p) : capi.sqlite3_errstr(rc);
    return Object.assign(new Error(message), errorFields(this.#sqlite3, code));
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error("database is not open");
  }
}

function errorFields(sqlite3: Sqlite3Static, errcode: number): { code: string; errcode: number; errstr: string } {
  return { code: "ERR_SQLITE_ERROR", errcode, errstr: sqlite3.capi.sqlite3_errstr(errcode) };
}

function isPositional(params: Params): params is readonly SqlValue[] {
  return Array.isArray(params);
}



