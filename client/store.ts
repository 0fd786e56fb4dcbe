import type { ConflictRecord } from "./conflicts.ts";
import type { SqlValue } from "../protocol/changeset.ts";
import type { Driver, Row } from "./drivers/types.ts";
import { createSchemaTables } from "./migrate.ts";
import { createOutbox } from "./outbox.ts";

/**
 * The replica's internal tables, all SQL for them in one place (the outbox's
 * in outbox.ts), and the queries the sync engine makes of the user's tables.
 * `_relay_*` names are reserved: the relay refuses changesets that touch
 * them, and the capture path takes its changeset before writing here, so
 * they never replicate.
 */
export function migrate(d: Driver): void {
  createOutbox(d);
  createSchemaTables(d);
  d.exec(`
    CREATE TABLE IF NOT EXISTS _relay_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _relay_conflicts(
      id INTEGER PRIMARY KEY,
      at INTEGER NOT NULL,
      seq INTEGER NOT NULL,
      client TEXT NOT NULL,
      cseq INTEGER NOT NULL,
      tbl TEXT NOT NULL,
      kind TEXT NOT NULL,
      op TEXT NOT NULL,
      pk TEXT NOT NULL,
      local TEXT,
      incoming TEXT,
      resolution TEXT NOT NULL
    );
  `);
}

export function getMeta(d: Driver, key: string): string | number | null {
  const v = d.all("SELECT value FROM _relay_meta WHERE key = ?", [key])[0]?.value;
  return v === undefined || v === null ? null : (v as string | number);
}

export function setMeta(d: Driver, key: string, value: string | number): void {
  d.run("INSERT INTO _relay_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value]);
}

export function schemaVersion(d: Driver): number {
  return d.all("PRAGMA schema_version")[0]!.schema_version as number;
}

export function foreignKeys(d: Driver): boolean {
  return d.all("PRAGMA foreign_keys")[0]?.foreign_keys === 1;
}

/** A no-op inside a transaction: call it outside BEGIN. */
export function setForeignKeys(d: Driver, on: boolean): void {
  d.exec(`PRAGMA foreign_keys = ${on ? "ON" : "OFF"}`);
}

/** No UNIQUE, NOT NULL or CHECK constraint besides the primary key, and no trigger (which may RAISE). */
export function onlyKeyConstraints(d: Driver, table: string): boolean {
  const unique = d.all("SELECT 1 FROM pragma_index_list(?) WHERE \"unique\" = 1 AND origin <> 'pk'", [table]).length > 0;
  const notNull = d.all("SELECT 1 FROM pragma_table_info(?) WHERE \"notnull\" = 1 AND pk = 0", [table]).length > 0;
  const sql = d.all("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE", [table])[0]?.sql;
  const check = typeof sql !== "string" || /\bcheck\b/i.test(sql);
  const trigger = d.all("SELECT 1 FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE", [table]).length > 0;
  return !unique && !notNull && !check && !trigger;
}

const quote = (id: string) => `"${id.replace(/"/g, '""')}"`;

/** The statement that reads one row of `table` by its primary key columns (`keyRow` runs it). */
export function keyQuery(table: string, pkColumns: readonly string[]): string {
  return `SELECT * FROM ${quote(table)} WHERE ${pkColumns.map((c) => `${quote(c)} IS ?`).join(" AND ")}`;
}

export function keyRow(d: Driver, query: string, pk: readonly SqlValue[]): Row | null {
  return d.all(query, pk)[0] ?? null;
}

export interface ColumnInfo {
  names: string[];
  /** 1-based position in the primary key, 0 for other columns (as PRAGMA table_info reports). */
  pk: number[];
}

export function tableInfo(d: Driver, table: string): ColumnInfo | undefined {
  const rows = d.all("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", [table]);
  if (rows.length === 0) return undefined;
  return { names: rows.map((r) => r.name as string), pk: rows.map((r) => r.pk as number) };
}

/** JSON for conflict records: BLOBs and big integers kept exact. */
function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) =>
    typeof x === "bigint" ? { $bigint: x.toString() } : x instanceof Uint8Array ? { $blob: Array.from(x) } : x,
  );
}

function fromJson<T>(s: string | null): T {
  if (s === null) return null as T;
  return JSON.parse(s, (_k, x) =>
    x && typeof x === "object" && "$bigint" in x ? BigInt(x.$bigint) : x && typeof x === "object" && "$blob" in x ? Uint8Array.from(x.$blob) : x,
  );
}

export function recordConflict(d: Driver, c: ConflictRecord): void {
  d.run(
    "INSERT INTO _relay_conflicts(at, seq, client, cseq, tbl, kind, op, pk, local, incoming, resolution) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [Date.now(), c.seq, c.client, c.cseq, c.table, c.kind, c.op, toJson(c.pk), c.local === null ? null : toJson(c.local), toJson(c.incoming), c.resolution],
  );
}

export function readConflicts(d: Driver): ConflictRecord[] {
  return d.all("SELECT * FROM _relay_conflicts ORDER BY id").map((r) => ({
    kind: r.kind as ConflictRecord["kind"],
    table: r.tbl as string,
    op: r.op as ConflictRecord["op"],
    pk: fromJson(r.pk as string),
    local: fromJson(r.local as string | null),
    incoming: fromJson(r.incoming as string),
    seq: r.seq as number,
    client: r.client as string,
    cseq: r.cseq as number,
    resolution: r.resolution as ConflictRecord["resolution"],
  }));
}
