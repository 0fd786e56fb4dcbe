import sqlite3InitModule, { type Sqlite3Static } from "@sqlite.org/sqlite-wasm";

/**
 * The sqlite-wasm module: loading it (once per process or worker), the OPFS
 * VFS, and the typed raw C exports the driver calls.
 * No Node-only imports in this file: it also runs in a browser Web Worker.
 */

let module: Promise<Sqlite3Static> | undefined;

/** The VFS that file paths open on when `openWasm` is given none: set by `installOpfsSahPool`. */
let persistentVfs: string | undefined;

/** The VFS `installOpfsSahPool` installed, if any. */
export function defaultVfs(): string | undefined {
  return persistentVfs;
}

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
 * The C functions of the hot paths, called as raw wasm exports: the
 * `capi` wrappers convert every argument and result in JavaScript (strings
 * through scoped allocations, pointers checked), which cost more than SQLite
 * itself on a small statement. Pointers are numbers (wasm32), i64 are bigint.
 */
export interface Exports {
  sqlite3_step(stmt: number): number;
  sqlite3_reset(stmt: number): number;
  sqlite3_clear_bindings(stmt: number): number;
  sqlite3_bind_null(stmt: number, i: number): number;
  sqlite3_bind_int(stmt: number, i: number, v: number): number;
  sqlite3_bind_int64(stmt: number, i: number, v: bigint): number;
  sqlite3_bind_double(stmt: number, i: number, v: number): number;
  sqlite3_bind_text(stmt: number, i: number, p: number, n: number, destructor: number): number;
  sqlite3_bind_blob(stmt: number, i: number, p: number, n: number, destructor: number): number;
  sqlite3_bind_zeroblob(stmt: number, i: number, n: number): number;
  sqlite3_column_type(stmt: number, i: number): number;
  sqlite3_column_int64(stmt: number, i: number): bigint;
  sqlite3_column_double(stmt: number, i: number): number;
  sqlite3_column_text(stmt: number, i: number): number;
  sqlite3_column_blob(stmt: number, i: number): number;
  sqlite3_column_bytes(stmt: number, i: number): number;
  sqlite3_changes(db: number): number;
  sqlite3_total_changes(db: number): number;
  sqlite3_last_insert_rowid(db: number): bigint;
  sqlite3_get_autocommit(db: number): number;
  sqlite3_prepare_v2(db: number, sql: number, n: number, stmt: number, tail: number): number;
  sqlite3_finalize(stmt: number): number;
  sqlite3_stmt_status(stmt: number, op: number, reset: number): number;
  sqlite3session_create(db: number, name: number, out: number): number;
  sqlite3session_attach(session: number, table: number): number;
  sqlite3session_changeset(session: number, n: number, out: number): number;
  sqlite3session_delete(session: number): void;
  sqlite3changeset_apply(db: number, n: number, p: number, filter: number, conflict: number, ctx: number): number;
  sqlite3_free(p: number): void;
  sqlite3_set_authorizer(db: number, callback: number, ctx: number): number;
}

export const ROW = 100; // SQLITE_ROW
export const DONE = 101; // SQLITE_DONE
export const READ = 20; // SQLITE_READ (authorizer action)
/** SQLITE_TRANSIENT: SQLite copies the bytes at bind time, so one scratch buffer serves every value. */
export const TRANSIENT = -1;
