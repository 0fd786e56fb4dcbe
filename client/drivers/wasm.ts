import sqlite3InitModule, { type Database, type Sqlite3Static } from "@sqlite.org/sqlite-wasm";
import type { SqlValue } from "../../protocol/changeset.ts";
import { RelayError } from "../errors.ts";
import { checkResolution, narrow, RESOLUTION, type ConflictType, type Driver, type Params, type Resolution, type Row, type Session } from "./types.ts";

// No Node-only imports in this file: it also runs in a browser Web Worker.

/** Prepared statements kept per connection; the sync engine reuses a few dozen at most. */
const STATEMENT_CACHE_SIZE = 64;

let module: Promise<Sqlite3Static> | undefined;

/** The VFS that file paths open on when `openWasm` is given none: set by `installOpfsSahPool`. */
let persistentVfs: string | undefined;

export interface LoadOptions {
  /**
   * Where sqlite3.wasm is served. Default: next to the sqlite-wasm module
   * (`new URL("sqlite3.wasm", import.meta.url)`), which Vite, webpack and
   * Rollup rewrite for you; bundlers that do not (esbuild) pass the URL
   * their file loader gives for "@sqlite.org/sqlite-wasm/sqlite3.wasm".
   */
  wasmUrl?: string;
}

/** The sqlite-wasm module, instantiated once per process (or worker). Options count on the first call only. */
export function loadSqliteWasm(options: LoadOptions = {}): Promise<Sqlite3Static> {
  const { wasmUrl } = options;
  // The published typings declare no argument; the Emscripten module takes the usual Module overrides.
  const init = sqlite3InitModule as unknown as (module?: { locateFile?: (file: string) => string }) => Promise<Sqlite3Static>;
  module ??= init(wasmUrl === undefined ? undefined : { locateFile: (file) => (file.endsWith(".wasm") ? wasmUrl : file) }).catch((e: unknown) => {
    module = undefined; // let a later call retry
    throw e;
  });
  return module;
}

export interface OpfsPoolOptions {
  /**
   * OPFS directory the pool lives in. The pool owns every file in it and
   * holds all of them open, so only one worker of the origin may use one
   * directory at a time: the caller serialises that (a Web Lock).
   */
  directory: string;
  /** Attempts while the handles are still held by a closing context (a reloading tab's old worker). Default 20. */
  attempts?: number;
  /** First wait between attempts in ms, doubling up to 1 s. Default 25. */
  retryMs?: number;
}

/**
 * Installs the "opfs-sahpool" VFS (OPFS through sync access handles: a
 * dedicated Web Worker only, no cross-origin isolation needed) and makes it
 * the VFS file paths open on. Resolves the VFS name; rejects when OPFS is
 * not available here (the caller falls back to ":memory:").
 */
export async function installOpfsSahPool(options: OpfsPoolOptions): Promise<string> {
  const opfs = globalThis as { FileSystemFileHandle?: { prototype?: { createSyncAccessHandle?: unknown } }; navigator?: { storage?: { getDirectory?: unknown } } };
  if (typeof opfs.FileSystemFileHandle?.prototype?.createSyncAccessHandle !== "function" || typeof opfs.navigator?.storage?.getDirectory !== "function") {
    // Not a dedicated worker in a secure context with OPFS: no retry will change that.
    throw new Error("OPFS sync access handles are not available in this context");
  }
  const sqlite3 = await loadSqliteWasm();
  const attempts = options.attempts ?? 20;
  let wait = options.retryMs ?? 25;
  for (let attempt = 1; ; attempt++) {
    try {
      // The typings lack forceReinitIfPreviouslyFailed (documented in the
      // source): without it a failed first attempt is cached and returned forever.
      const install = sqlite3.installOpfsSAHPoolVfs.bind(sqlite3) as (opts: Parameters<Sqlite3Static["installOpfsSAHPoolVfs"]>[0] & { forceReinitIfPreviouslyFailed?: boolean }) => ReturnType<Sqlite3Static["installOpfsSAHPoolVfs"]>;
      const pool = await install({
        directory: options.directory,
        // Without it a failed init deletes the pool: a reloading tab whose old
        // worker still holds the handles would wipe the database.
        preserveOnInitFailure: true,
        forceReinitIfPreviouslyFailed: true,
      });
      persistentVfs = pool.vfsName;
      return pool.vfsName;
    } catch (e) {
      // A handle still held by a closing context (NoModificationAllowedError) frees up.
      if (attempt >= attempts) throw e;
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 1000);
    }
  }
}

/**
 * Opens ":memory:", or a file on a persistent VFS: `options.vfs`, else the one
 * `installOpfsSahPool` installed. The default VFS of the Node build keeps
 * files in memory, so a path without a VFS would silently lose data.
 */
export async function openWasm(path: string, options: { vfs?: string } = {}): Promise<Driver> {
  const sqlite3 = await loadSqliteWasm();
  const memory = path === ":memory:" || path === "";
  const vfs = memory ? options.vfs : (options.vfs ?? persistentVfs);
  if (!memory && vfs === undefined) {
    throw new Error(`wasm driver: "${path}" needs a persistent VFS; only ":memory:" works without one`);
  }
  // opfs-sahpool only recognises absolute paths.
  const filename = !memory && vfs !== undefined && !path.startsWith("/") ? `/${path}` : path;
  const db = new sqlite3.oo1.DB(vfs === undefined ? { filename } : { filename, vfs });
  const driver = new WasmDriver(sqlite3, db, !memory);
  driver.exec("PRAGMA foreign_keys = ON");
  return driver;
}

interface CachedStatement {
  p: number;
  /** Bare parameter names ("id") resolved to their index, see #bindNamed. */
  names: Map<string, number>;
  columns?: string[];
  /** SQLITE_STMTSTATUS_REPREPARE when `columns` was read. */
  prepares?: number;
}

class WasmDriver implements Driver {
  readonly kind = "wasm";
  readonly persistent: boolean;
  #sqlite3: Sqlite3Static;
  #db: Database;
  #p: number;
  #statements = new Map<string, CachedStatement>();
  #sessions = new Set<number>();
  #closed = false;

  constructor(sqlite3: Sqlite3Static, db: Database, persistent: boolean) {
    this.#sqlite3 = sqlite3;
    this.#db = db;
    this.#p = db.pointer!;
    this.persistent = persistent;
  }

  get inTransaction(): boolean {
    this.#assertOpen(); // a closed connection's pointer is freed memory
    return this.#sqlite3.capi.sqlite3_get_autocommit(this.#p) === 0;
  }

  exec(sql: string): void {
    this.#assertOpen();
    this.#check(this.#sqlite3.capi.sqlite3_exec(this.#p, sql, 0, 0, 0));
  }

  run(sql: string, params?: Params): { changes: number; lastInsertRowid: number | bigint } {
    const { capi } = this.#sqlite3;
    const stmt = this.#prepare(sql);
    try {
      this.#bind(stmt, params);
      let rc: number;
      while ((rc = capi.sqlite3_step(stmt.p)) === capi.SQLITE_ROW);
      if (rc !== capi.SQLITE_DONE) this.#check(rc);
    } finally {
      capi.sqlite3_reset(stmt.p); // the error, if any, was already reported by step
    }
    return { changes: capi.sqlite3_changes(this.#p), lastInsertRowid: narrow(capi.sqlite3_last_insert_rowid(this.#p)) };
  }

  all(sql: string, params?: Params): Row[] {
    const { capi } = this.#sqlite3;
    const stmt = this.#prepare(sql);
    const rows: Row[] = [];
    try {
      this.#bind(stmt, params);
      let names: string[] | undefined;
      let rc: number;
      while ((rc = capi.sqlite3_step(stmt.p)) === capi.SQLITE_ROW) {
        names ??= this.#columnNames(stmt);
        // Null prototype, like node:sqlite's rows (and safe for a column named "__proto__").
        const row: Row = Object.create(null);
        for (let i = 0; i < names.length; i++) row[names[i]!] = this.#column(stmt.p, i);
        rows.push(row);
      }
      if (rc !== capi.SQLITE_DONE) this.#check(rc);
    } finally {
      capi.sqlite3_reset(stmt.p);
    }
    return rows;
  }

  session(): Session {
    const { capi, wasm } = this.#sqlite3;
    this.#assertOpen();
    const sp = wasm.pstack.pointer;
    let p: number;
    try {
      const pp = wasm.pstack.allocPtr();
      this.#checkSession(capi.sqlite3session_create(this.#p, "main", pp), "sqlite3session_create");
      p = wasm.peekPtr(pp);
    } finally {
      wasm.pstack.restore(sp);
    }
    const rc = capi.sqlite3session_attach(p, 0); // null table name: every table
    if (rc !== 0) {
      capi.sqlite3session_delete(p);
      this.#checkSession(rc, "sqlite3session_attach");
    }
    this.#sessions.add(p);
    return {
      changeset: () => {
        if (!this.#sessions.has(p)) throw new Error("session is not open");
        return this.#changeset(p);
      },
      close: () => {
        if (this.#sessions.delete(p)) capi.sqlite3session_delete(p);
      },
    };
  }

  applyChangeset(changeset: Uint8Array, onConflict: (type: ConflictType) => Resolution): boolean {
    const { capi, wasm } = this.#sqlite3;
    this.#assertOpen();
    // An exception must not unwind through SQLite's C frames: abort the apply, rethrow after.
    let thrown: { error: unknown } | undefined;
    let aborted = false;
    const handler = (_ctx: number, type: number, _iter: number): Resolution => {
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
    const p = wasm.alloc(Math.max(n, 1));
    let rc: number;
    try {
      wasm.heap8u().set(changeset, p);
      // One call into C for the whole changeset; JS runs only on conflicts.
      rc = capi.sqlite3changeset_apply(this.#p, n, p, 0, handler, 0);
    } finally {
      wasm.dealloc(p);
    }
    if (thrown) throw thrown.error;
    if (rc === 0) return true;
    if (rc === capi.SQLITE_ABORT && aborted) return false;
    const cause = this.#error(rc);
    throw new RelayError("apply_failed", `changeset apply failed: ${cause.message}`, { cause });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const { capi } = this.#sqlite3;
    // Sessions must be deleted before their connection is closed.
    for (const p of this.#sessions) capi.sqlite3session_delete(p);
    this.#sessions.clear();
    for (const stmt of this.#statements.values()) capi.sqlite3_finalize(stmt.p);
    this.#statements.clear();
    this.#db.close();
  }

  #changeset(session: number): Uint8Array {
    const { capi, wasm } = this.#sqlite3;
    const sp = wasm.pstack.pointer;
    try {
      const pn = wasm.pstack.allocPtr();
      const pp = wasm.pstack.allocPtr();
      this.#checkSession(capi.sqlite3session_changeset(session, pn, pp), "sqlite3session_changeset");
      const n = wasm.peek32(pn);
      const p = wasm.peekPtr(pp);
      // slice() copies out of the heap, which sqlite3_free may then reuse.
      const out = wasm.heap8u().slice(p, p + n);
      capi.sqlite3_free(p);
      return out;
    } finally {
      wasm.pstack.restore(sp);
    }
  }

  #prepare(sql: string): CachedStatement {
    this.#assertOpen();
    const { capi, wasm } = this.#sqlite3;
    let stmt = this.#statements.get(sql);
    if (stmt) {
      this.#statements.delete(sql); // re-insert: Map order is the LRU order
    } else {
      const sp = wasm.pstack.pointer;
      try {
        const pp = wasm.pstack.allocPtr();
        this.#check(capi.sqlite3_prepare_v2(this.#p, sql, -1, pp, 0));
        const p = wasm.peekPtr(pp);
        if (p === 0) throw new Error("no SQL statement to run (empty or only comments)");
        stmt = { p, names: new Map() };
      } finally {
        wasm.pstack.restore(sp);
      }
      if (this.#statements.size >= STATEMENT_CACHE_SIZE) {
        const [oldest, evicted] = this.#statements.entries().next().value!;
        this.#statements.delete(oldest);
        capi.sqlite3_finalize(evicted.p);
      }
    }
    this.#statements.set(sql, stmt);
    return stmt;
  }

  /** Cached: reading them costs more than a point query. Valid until a schema change re-prepares the statement. */
  #columnNames(stmt: CachedStatement): string[] {
    const { capi } = this.#sqlite3;
    const prepares = capi.sqlite3_stmt_status(stmt.p, capi.SQLITE_STMTSTATUS_REPREPARE, 0);
    if (stmt.columns === undefined || stmt.prepares !== prepares) {
      stmt.columns = [];
      for (let i = 0, n = capi.sqlite3_column_count(stmt.p); i < n; i++) stmt.columns.push(capi.sqlite3_column_name(stmt.p, i));
      stmt.prepares = prepares;
    }
    return stmt.columns;
  }

  #bind(stmt: CachedStatement, params: Params | undefined): void {
    // Unbound parameters are NULL on every run, as with node:sqlite.
    const { capi } = this.#sqlite3;
    capi.sqlite3_clear_bindings(stmt.p);
    if (params === undefined) return;
    if (isPositional(params)) {
      if (params.length > capi.sqlite3_bind_parameter_count(stmt.p)) this.#check(capi.SQLITE_RANGE);
      for (let i = 0; i < params.length; i++) this.#bindOne(stmt.p, i + 1, params[i]!);
      return;
    }
    for (const key in params) this.#bindOne(stmt.p, this.#paramIndex(stmt, key), params[key]!);
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

  #bindOne(p: number, i: number, v: SqlValue): void {
    const { capi, wasm } = this.#sqlite3;
    let rc: number;
    // sqlite-wasm binds sqlite3_bind_null as returning void; #bind checked the index already.
    if (v === null) rc = (capi.sqlite3_bind_null(p, i), 0);
    // Same rule as the node driver: safe integers are INTEGER, other numbers REAL.
    else if (typeof v === "number") rc = Number.isSafeInteger(v) ? capi.sqlite3_bind_int64(p, i, BigInt(v)) : capi.sqlite3_bind_double(p, i, v);
    else if (typeof v === "bigint") {
      // The int64 binding would silently wrap an out-of-range value.
      if (v < INT64_MIN || v > INT64_MAX) throw new RangeError(`BigInt value is too large to bind: ${v}`);
      rc = capi.sqlite3_bind_int64(p, i, v);
    } else if (typeof v === "string") {
      // Copied by hand: the 3.54.1 wrapper's JS-string path throws (ReferenceError: pMem).
      const [ptr, n] = wasm.allocCString(v, true);
      rc = capi.sqlite3_bind_text(p, i, ptr, n, capi.SQLITE_WASM_DEALLOC); // SQLite frees it, even on error
    } else if (v.byteLength === 0) {
      // A zero-byte allocation may be a null pointer, which would bind NULL instead of an empty blob.
      rc = capi.sqlite3_bind_zeroblob(p, i, 0);
    } else {
      const ptr = wasm.alloc(v.byteLength);
      wasm.heap8u().set(v, ptr);
      rc = capi.sqlite3_bind_blob(p, i, ptr, v.byteLength, capi.SQLITE_WASM_DEALLOC);
    }
    this.#check(rc);
  }

  #column(p: number, i: number): SqlValue {
    const { capi, wasm } = this.#sqlite3;
    switch (capi.sqlite3_column_type(p, i)) {
      case capi.SQLITE_INTEGER:
        return narrow(capi.sqlite3_column_int64(p, i));
      case capi.SQLITE_FLOAT:
        return capi.sqlite3_column_double(p, i);
      case capi.SQLITE_TEXT:
        return capi.sqlite3_column_text(p, i);
      case capi.SQLITE_BLOB: {
        const ptr = capi.sqlite3_column_blob(p, i); // before _bytes, as SQLite documents
        const n = capi.sqlite3_column_bytes(p, i);
        return n === 0 ? new Uint8Array(0) : wasm.heap8u().slice(ptr, ptr + n);
      }
      default:
        return null;
    }
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

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;


