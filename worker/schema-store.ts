import { changesetTables, type TableHeader } from "../protocol/changeset.ts";
import { RelayError } from "../protocol/errors.ts";
import type { LogEntry, PushEntry } from "../protocol/messages.ts";
import { byName, checkMigrations, SHAPES_QUERY, shapeMismatch, shapesFromRows, statementsKey, type SchemaVersion, type ShapeRow, type TableShape } from "../protocol/schema.ts";
import type { Sql } from "./log-store.ts";

/**
 * The schema in the log, on the relay (DESIGN.md, "Schema in the log"): the
 * versions pushed so far, each one's DDL run in the Durable Object's own
 * SQLite (the app's tables live there, always empty) so SQLite itself
 * validates it, and every table's shape per version, against which each data
 * entry is checked before it is stored. Plain synchronous functions over the
 * DO's SQL handle, like log-store.ts, whose push calls them inside the same
 * transaction: a refusal leaves the log, the versions and the DDL unchanged.
 *
 *   relay_schema(version, seq, …, sub, statements)   one row per version, its place in the log
 *   relay_shape(version, tbl, shape)                 every table at every version (snapshots read these)
 */

/** Step 3 of the relay's tables (log-store.ts runs the steps in order). */
export function migrate(sql: Sql): void {
  sql.exec(`
    CREATE TABLE relay_schema(
      version INTEGER PRIMARY KEY,
      seq INTEGER NOT NULL UNIQUE,
      client TEXT NOT NULL,
      ts INTEGER NOT NULL,
      statements TEXT NOT NULL,
      sub TEXT
    );
    CREATE TABLE relay_shape(
      version INTEGER NOT NULL,
      tbl TEXT NOT NULL,
      shape TEXT NOT NULL,
      PRIMARY KEY(version, tbl)
    ) WITHOUT ROWID;
    ALTER TABLE relay_log ADD COLUMN v INTEGER NOT NULL DEFAULT 0;
  `);
}

/** The log's current schema version; 0 while it has none (then entries are checked for form only, as before schemas). */
export function logVersion(sql: Sql): number {
  return sql.exec<{ v: number | null }>("SELECT max(version) AS v FROM relay_schema").one().v ?? 0;
}

/** The shapes of every table at `version`, by lower-cased name. */
export function shapesAt(sql: Sql, version: number): TableShape[] {
  return sql.exec<{ shape: string }>("SELECT shape FROM relay_shape WHERE version = ? ORDER BY tbl", version).toArray().map((r) => JSON.parse(r.shape) as TableShape);
}

/**
 * The log's version and the shapes by version, kept by the object (a query
 * less per push): only this object adds versions, and a version never
 * changes once committed. A push that fails may have read or added a version
 * its rollback undid: the object clears the cache when a push fails.
 */
export class ShapeCache {
  private readonly versions = new Map<number, Map<string, TableShape>>();
  private current: number | undefined;
  get(sql: Sql, version: number): Map<string, TableShape> {
    let m = this.versions.get(version);
    if (!m) this.versions.set(version, (m = byName(shapesAt(sql, version))));
    return m;
  }
  version(sql: Sql): number {
    return (this.current ??= logVersion(sql));
  }
  added(version: number): void {
    this.current = version;
  }
  clear(): void {
    this.versions.clear();
    this.current = undefined;
  }
}

/**
 * Take `sv` at the log's next position: the same statements as the log's
 * version of that number are nothing to do (undefined), others are
 * `schema_conflict`; a new version runs its DDL, records the shapes and
 * becomes the schema entry returned (the caller stores nothing else for it).
 */
export function addVersion(sql: Sql, sv: SchemaVersion, current: number, at: { seq: number; client: string; sub: string | null; ts: number; mayChange: boolean }): LogEntry | undefined {
  if (sv.version <= current) {
    const had = sql.exec<{ statements: string }>("SELECT statements FROM relay_schema WHERE version = ?", sv.version).one().statements;
    if (had !== statementsKey(sv.statements)) {
      throw new RelayError("schema_conflict", `schema version ${sv.version} is already in the log with other statements; versions never change once pushed (add a new version instead)`);
    }
    return undefined;
  }
  if (sv.version !== current + 1) throw new RelayError("bad_request", `schema version ${sv.version} does not follow the log's version ${current}`);
  if (!at.mayChange) throw new RelayError("forbidden", `adding schema version ${sv.version} needs a token with the role the relay's SCHEMA_ROLE names`);
  const read = checkMigrations([sv.statements], sv.version)[0]!;
  // The rules on names are read from the statements; this is the net under
  // them: whatever a statement did, no reserved object may have changed.
  const reserved = () => JSON.stringify(sql.exec(RESERVED_OBJECTS).toArray());
  const before = reserved();
  read.forEach((s, i) => {
    const where = `version ${sv.version}, statement ${i + 1}`;
    try {
      sql.exec(sv.statements[i]!);
    } catch (e) {
      throw new RelayError("schema_refused", `${where}: ${(e as Error).message}`);
    }
    // SQLite adds a NOT NULL column without a DEFAULT to an empty table (and
    // the relay's are empty), but not to a replica's that holds rows.
    if (s.op === "alter" && s.addColumn !== undefined) {
      const col = sql.exec<{ notnull: number; dflt: string | null }>('SELECT "notnull", dflt_value AS dflt FROM pragma_table_xinfo(?) WHERE name = ? COLLATE NOCASE', s.name, s.addColumn).toArray()[0];
      if (col?.notnull && col.dflt === null) throw new RelayError("schema_refused", `${where}: a NOT NULL column needs a DEFAULT to be added to a table with rows`);
    }
  });
  if (reserved() !== before) throw new RelayError("schema_refused", `version ${sv.version} changes an object of the relay's or SQLite's own`);
  for (const t of shapesFromRows(sql.exec<ShapeRow>(SHAPES_QUERY))) {
    sql.exec("INSERT INTO relay_shape(version, tbl, shape) VALUES (?, ?, ?)", sv.version, t.name, JSON.stringify(t));
  }
  const statements = statementsKey(sv.statements);
  sql.exec("INSERT INTO relay_schema(version, seq, client, sub, ts, statements) VALUES (?, ?, ?, ?, ?, ?)", sv.version, at.seq, at.client, at.sub, at.ts, statements);
  return { seq: at.seq, client: at.client, cseq: 0, changeset: new Uint8Array(0), ts: at.ts, v: sv.version, schema: sv.statements };
}

/** The relay's own objects (and Cloudflare's): SQLite refuses app names under sqlite_ by itself. */
const RESERVED_OBJECTS = `
  SELECT type, name, tbl_name, sql FROM sqlite_schema
  WHERE lower(tbl_name) GLOB 'relay_*' OR lower(tbl_name) GLOB '_relay_*' OR lower(tbl_name) GLOB '_cf_*'
  ORDER BY type, name`;

/**
 * A new data entry fits the log's schema: captured under the log's current
 * version, and every table it touches has that version's columns and primary
 * key. Called before it is stored; throws `schema_outdated` or `schema_mismatch`.
 */
export function checkEntry(entry: PushEntry, current: number, shapes: (() => Map<string, TableShape>) | undefined, headers?: readonly TableHeader[]): void {
  checkVersion(entry, current);
  if (shapes) checkTables(entry, headers ?? changesetTables(entry.changeset), shapes());
}

/** The `v` rule of checkEntry (an entry uploaded in parts is checked before its bytes are read: entry-parts.ts). */
export function checkVersion(entry: Pick<PushEntry, "cseq" | "v">, current: number): void {
  const v = entry.v ?? 0;
  if (v < current) {
    throw new RelayError("schema_outdated", `cseq ${entry.cseq} was captured under schema version ${v}, the log is at ${current}: pull, migrate and push again`);
  }
  if (v > current) throw new RelayError("schema_mismatch", `cseq ${entry.cseq} was captured under schema version ${v}, which the log does not have (it is at ${current})`);
}

/** The shape rule of checkEntry, over the entry's table headers. */
export function checkTables(entry: Pick<PushEntry, "cseq">, headers: readonly TableHeader[], tables: Map<string, TableShape>): void {
  for (const t of headers) {
    const why = shapeMismatch(tables.get(t.name.toLowerCase()), t);
    if (why) throw new RelayError("schema_mismatch", `cseq ${entry.cseq}: ${why}`);
  }
}

/** Schema entries after `?1` in log order, for pull (log-store.ts merges them with the data entries). */
export const SCHEMA_ENTRIES = "SELECT seq, client, 0 AS cseq, ts, 0 AS size, 0 AS chunks, NULL AS body, version AS v, statements FROM relay_schema WHERE seq > ?1";
