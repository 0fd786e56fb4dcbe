import type { LogEntry } from "../protocol/messages.ts";
import { byName, checkMigrations, readStatement, SHAPES_QUERY, shapesFromRows, statementsKey, type SchemaVersion, type ShapeRow, type Statement, type Statements, type TableShape } from "../protocol/schema.ts";
import type { ConflictOptions } from "./conflicts.ts";
import type { Driver } from "./drivers/types.ts";
import { RelayError } from "./errors.ts";
import * as outbox from "./outbox.ts";
import { redo, undo, type Dropped } from "./rebase.ts";
import { SchemaCache } from "./apply.ts";
import type { ReplicaSql } from "./step.ts";
import { getMeta, setMeta } from "./store.ts";
import { Tables } from "./tables.ts";
import { guardAfterDdl } from "./triggers.ts";

/**
 * The replica's side of the schema in the log (DESIGN.md invariant 10).
 * A replica's tables are at its local version: the app's migrations run at
 * open, possibly ahead of the log, and the log's schema entries run as the
 * sync step meets them, when they are ahead of the app. Every version it
 * reached is kept here with its statements and table shapes, so writes
 * captured under an older version can be translated (translate.ts).
 *
 *   _relay_schema(version, statements)   every version this replica has
 *   _relay_shape(version, tbl, shape)    its tables after each version
 *   _relay_meta schema_version           the local tables' version
 *   _relay_meta log_version              the log's version at the cursor
 *
 * Versions above log_version are the replica's own, not yet in the log: the
 * sync loop pushes them ahead of the entries captured under them.
 */
export function createSchemaTables(d: Driver): void {
  d.exec(`
    CREATE TABLE IF NOT EXISTS _relay_schema(version INTEGER PRIMARY KEY, statements TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS _relay_shape(version INTEGER NOT NULL, tbl TEXT NOT NULL, shape TEXT NOT NULL, PRIMARY KEY(version, tbl)) WITHOUT ROWID;
  `);
}

export class SchemaState {
  private readonly d: Driver;
  /** The replica's table list, read again after each version's DDL. */
  private readonly tables: Tables;
  private cached: { local?: number; log?: number } = {};
  private readonly shapeCache = new Map<number, Map<string, TableShape>>();
  private readonly statementCache = new Map<number, Statement[]>();

  constructor(d: Driver, tables = new Tables(d)) {
    this.d = d;
    this.tables = tables;
  }

  /** The version the local tables are at; captured writes carry it. */
  local(): number {
    return (this.cached.local ??= Number(getMeta(this.d, "schema_version") ?? 0));
  }

  /** The log's version at the cursor. */
  log(): number {
    return (this.cached.log ??= Number(getMeta(this.d, "log_version") ?? 0));
  }

  /** Local versions the log does not have yet. */
  ahead(): boolean {
    return this.local() > this.log();
  }

  /** Drop the caches: a transaction that changed them rolled back. */
  forget(): void {
    this.cached = {};
    this.shapeCache.clear();
    this.statementCache.clear();
  }

  /** This replica's own versions above `after` (and above the log's), to push before entries captured under them. */
  unconfirmed(after: number, upTo = this.local()): SchemaVersion[] {
    const rows = this.d.all("SELECT version, statements FROM _relay_schema WHERE version > ? AND version <= ? ORDER BY version", [Math.max(after, this.log()), upTo]);
    return rows.map((r) => ({ version: r.version as number, statements: JSON.parse(r.statements as string) as string[] }));
  }

  statementsKey(version: number): string | undefined {
    return this.d.all("SELECT statements FROM _relay_schema WHERE version = ?", [version])[0]?.statements as string | undefined;
  }

  /** The tables at `version`, by lower-cased name. */
  shapes(version: number): Map<string, TableShape> {
    let m = this.shapeCache.get(version);
    if (!m) {
      const rows = this.d.all("SELECT shape FROM _relay_shape WHERE version = ?", [version]);
      this.shapeCache.set(version, (m = byName(rows.map((r) => JSON.parse(r.shape as string) as TableShape))));
    }
    return m;
  }

  /** What `version`'s statements do (for following renamed and dropped columns). */
  statements(version: number): Statement[] {
    let s = this.statementCache.get(version);
    if (!s) {
      const key = this.statementsKey(version);
      if (key === undefined) throw new RelayError("internal", `schema version ${version} is not recorded locally`);
      this.statementCache.set(version, (s = (JSON.parse(key) as string[]).map(readStatement)));
    }
    return s;
  }

  /**
   * Run `version`'s DDL on the local tables (inside the caller's transaction)
   * and record it. Triggers it created are guarded before anything is
   * replayed over them (triggers.ts).
   */
  run(version: number, statements: Statements): void {
    statements.forEach((stmt, i) => {
      try {
        this.d.exec(stmt);
      } catch (e) {
        throw new RelayError("schema_refused", `schema version ${version}, statement ${i + 1}: ${(e as Error).message}`, { cause: e });
      }
    });
    guardAfterDdl(this.d, this.tables);
    for (const t of shapesFromRows(this.d.all(SHAPES_QUERY) as unknown as ShapeRow[])) {
      this.d.run("INSERT OR REPLACE INTO _relay_shape(version, tbl, shape) VALUES (?, ?, ?)", [version, t.name, JSON.stringify(t)]);
    }
    this.d.run("INSERT INTO _relay_schema(version, statements) VALUES (?, ?)", [version, statementsKey(statements)]);
    this.setLocal(version);
  }

  /**
   * A schema entry met in the log, inside the sync step (pending writes are
   * undone): the replica's own version of that number must be the same;
   * a version it lacks runs now (true). Either way the log is at it from here on.
   */
  fromLog(entry: LogEntry): boolean {
    const [v, statements] = [entry.v ?? 0, entry.schema ?? []];
    const runs = v > this.local();
    if (!runs && this.statementsKey(v) !== statementsKey(statements)) throw conflict(v, "the log's");
    if (runs && v !== this.local() + 1) throw new RelayError("internal", `the log's schema version ${v} does not follow the local ${this.local()}`);
    if (runs) this.run(v, statements);
    setMeta(this.d, "log_version", v);
    this.cached.log = v;
    return runs;
  }

  private setLocal(version: number): void {
    setMeta(this.d, "schema_version", version);
    this.cached.local = version;
  }
}

function conflict(version: number, whose: string): RelayError {
  return new RelayError("schema_conflict", `schema version ${version} differs from ${whose} version ${version}: a version never changes once it exists; add a new one instead`);
}

/**
 * At open, inside the opening transaction (foreign keys off): the app's
 * migrations against what this database has. Versions it has must be the
 * same; new ones run now, ahead of the log if need be, with pending writes
 * undone first and re-applied translated after (so they survive an app
 * upgrade), replaying as a sync step does (guarded triggers stay still).
 * Returns what translation dropped.
 */
export function migrateAtOpen(d: Driver, migrations: readonly Statements[], me: string, policy: ConflictOptions, sql: ReplicaSql): Dropped[] {
  checkMigrations(migrations);
  const state = new SchemaState(d, sql.tables);
  const have = state.local();
  for (let v = 1; v <= Math.min(have, migrations.length); v++) {
    if (state.statementsKey(v) !== statementsKey(migrations[v - 1]!)) throw conflict(v, "this database's");
  }
  if (migrations.length <= have) return [];
  // Triggers from before this library guarded them, or from DDL through query(), are guarded before the undo replays over them.
  guardAfterDdl(d, sql.tables);
  return sql.fns.replay(() => {
    const pending = outbox.pending(d);
    undo(d, pending);
    for (let v = have + 1; v <= migrations.length; v++) state.run(v, migrations[v - 1]!);
    return redo(d, me, pending, policy, new SchemaCache(d, sql.tables), state).dropped;
  });
}
