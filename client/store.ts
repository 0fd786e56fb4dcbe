import type { ConflictRecord } from "./conflicts.ts";
import type { Driver } from "./drivers/types.ts";

/**
 * The replica's internal tables, all SQL for them in one place. `_relay_*`
 * names are reserved: the relay refuses changesets that touch them, and the
 * capture path takes its changeset before writing here, so they never
 * replicate.
 */
export function migrate(d: Driver): void {
  d.exec(`
    CREATE TABLE IF NOT EXISTS _relay_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _relay_outbox(
      cseq INTEGER PRIMARY KEY,
      changeset BLOB NOT NULL,  -- what is (or will be) pushed; never changes once sent
      applied BLOB NOT NULL,    -- what the local view holds of it; undone by its inverse
      sent INTEGER NOT NULL DEFAULT 0
    );
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

export interface OutboxRow {
  cseq: number;
  changeset: Uint8Array;
  applied: Uint8Array;
  sent: boolean;
}

export function outbox(d: Driver, limit = -1): OutboxRow[] {
  return d.all("SELECT cseq, changeset, applied, sent FROM _relay_outbox ORDER BY cseq LIMIT ?", [limit]).map((r) => ({
    cseq: r.cseq as number,
    changeset: r.changeset as Uint8Array,
    applied: r.applied as Uint8Array,
    sent: r.sent === 1,
  }));
}

export function pendingCount(d: Driver): number {
  return d.all("SELECT count(*) AS n FROM _relay_outbox")[0]!.n as number;
}

/** `sent`: the caller sends it as soon as this transaction commits. */
export function enqueue(d: Driver, cseq: number, changeset: Uint8Array, sent = false): void {
  d.run("INSERT INTO _relay_outbox(cseq, changeset, applied, sent) VALUES (?, ?, ?, ?)", [cseq, changeset, changeset, sent ? 1 : 0]);
  setMeta(d, "last_cseq", cseq);
}

/**
 * Entries `from..upTo` are being sent. Batches go out in cseq order, so the
 * rows below `from` are marked already; bounding the range keeps this from
 * scanning the whole backlog of a writer that outpaces its acks.
 */
export function markSent(d: Driver, from: number, upTo: number): void {
  d.run("UPDATE _relay_outbox SET sent = 1 WHERE cseq >= ? AND cseq <= ? AND sent = 0", [from, upTo]);
}

export function dequeue(d: Driver, cseq: number): void {
  d.run("DELETE FROM _relay_outbox WHERE cseq = ?", [cseq]);
}

/** After a rebase: what the local view now holds of a pending entry; unsent entries ship that instead. */
export function recapture(d: Driver, row: OutboxRow, applied: Uint8Array): void {
  if (!row.sent && applied.byteLength === 0) return dequeue(d, row.cseq);
  if (row.sent) d.run("UPDATE _relay_outbox SET applied = ? WHERE cseq = ?", [applied, row.cseq]);
  else d.run("UPDATE _relay_outbox SET changeset = ?, applied = ? WHERE cseq = ?", [applied, applied, row.cseq]);
}

export function schemaVersion(d: Driver): number {
  return d.all("PRAGMA schema_version")[0]!.schema_version as number;
}

/** Replicated tables: every table but SQLite's and ours. */
export function userTables(d: Driver): string[] {
  return d
    .all("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_relay\\_%' ESCAPE '\\' ORDER BY name")
    .map((r) => r.name as string);
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
