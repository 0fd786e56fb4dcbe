import type { SqlValue } from "../../protocol/changeset.ts";

/**
 * The small interface the sync engine talks to. Drivers are thin adapters over
 * one SQLite build each; the engine never asks which one it runs on.
 * Everything here is synchronous: both SQLite builds are.
 */
export type Row = Record<string, SqlValue>;
export type Params = readonly SqlValue[] | Readonly<Record<string, SqlValue>>;

/** SQLITE_CHANGESET_* conflict types, as passed to the conflict handler. */
export const CONFLICT = { DATA: 1, NOTFOUND: 2, CONFLICT: 3, CONSTRAINT: 4, FOREIGN_KEY: 5 } as const;
export type ConflictType = (typeof CONFLICT)[keyof typeof CONFLICT];

/** SQLITE_CHANGESET_* resolutions a conflict handler returns. */
export const RESOLUTION = { OMIT: 0, REPLACE: 1, ABORT: 2 } as const;
export type Resolution = (typeof RESOLUTION)[keyof typeof RESOLUTION];

/** One write the authorizer reports (see Driver.writesOf). */
export interface Write {
  table: string;
  /** The trigger whose statement writes, null for the statement itself. */
  trigger: string | null;
}

/** Authorizer action codes (sqlite3.h) that write rows: SQLITE_DELETE, SQLITE_INSERT, SQLITE_UPDATE (arg 1: the table). */
export const WRITE_ACTIONS: ReadonlySet<number> = new Set([9, 18, 23]);

export type DriverKind = "node" | "wasm";

export interface Session {
  /** The changeset of everything recorded so far (may be empty: length 0). */
  changeset(): Uint8Array;
  /** Frees the session. Idempotent. */
  close(): void;
}

export interface Driver {
  readonly kind: DriverKind;
  /** Whether the database persists on disk (false for ":memory:"). */
  readonly persistent: boolean;
  /** Run one or more SQL statements without parameters. */
  exec(sql: string): void;
  /**
   * Run one statement with parameters, or without parameters one or more.
   * `changes`: the rows the statements inserted, updated or deleted, as
   * SQLite's changes() counts them (not rows changed by triggers or foreign
   * key actions); 0 for a statement that writes no rows (SELECT, DDL, PRAGMA).
   */
  run(sql: string, params?: Params): { changes: number; lastInsertRowid: number | bigint };
  /** Run one statement and return its rows as plain objects. */
  all(sql: string, params?: Params): Row[];
  /**
   * Start a session recording changes to the given tables of the main
   * database, or to every table when `tables` is omitted.
   */
  session(tables?: readonly string[]): Session;
  /**
   * Register a SQL function on this connection (not deterministic, usable in
   * triggers and DEFAULT clauses). `fn` gets the arguments as `all` returns
   * values; a thrown error becomes the statement's error.
   */
  function(name: string, fn: (...args: SqlValue[]) => SqlValue): void;
  /**
   * sqlite3changeset_apply. The handler gets only the conflict type (that is
   * all node:sqlite offers), so both drivers offer exactly that. Returns false
   * when the handler aborted (SQLite then rolled the apply back); throws a
   * RelayError("apply_failed") when SQLite reports an error (corrupt input, ...).
   */
  applyChangeset(changeset: Uint8Array, onConflict: (type: ConflictType) => Resolution): boolean;
  /**
   * The tables one statement reads, as SQLite's authorizer reports them while
   * it compiles the statement (SQLITE_READ): joins, subqueries and CTEs
   * included, a view as its base tables (and its own name), at the schema of
   * now (compiled afresh: a new version can redefine a view). undefined when
   * this SQLite build cannot tell (node:sqlite without setAuthorizer, before
   * Node 24.10): callers then assume it reads everything.
   */
  tablesRead(sql: string): string[] | undefined;
  /**
   * The rows one statement would write, as SQLite's authorizer reports them
   * while it compiles the statement (SQLITE_INSERT, SQLITE_UPDATE,
   * SQLITE_DELETE): its own writes (`trigger` null) and those of every
   * trigger it would fire, nested ones included, each with the name of the
   * trigger that writes (an INSERT into a view with an INSTEAD OF trigger:
   * the view, then that trigger's writes). One entry per report (an UPDATE:
   * one per column set). Prepared afresh and never run. undefined where
   * tablesRead is.
   */
  writesOf(sql: string): Write[] | undefined;
  /** True while a transaction is open on this connection. */
  readonly inTransaction: boolean;
  close(): void;
}

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Integers as number when exact, else bigint: both drivers hand out the same types. */
export function narrow(v: bigint): number | bigint {
  return v >= MIN_SAFE && v <= MAX_SAFE ? Number(v) : v;
}

/** Anything else would be SQLITE_MISUSE on one build and a silent OMIT on the other. */
export function checkResolution(r: Resolution): Resolution {
  if (r !== RESOLUTION.OMIT && r !== RESOLUTION.REPLACE && r !== RESOLUTION.ABORT) throw new TypeError(`invalid conflict resolution: ${String(r)}`);
  return r;
}
