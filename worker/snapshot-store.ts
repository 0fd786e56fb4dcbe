import { RelayError } from "../protocol/errors.ts";
import { STORAGE_CHUNK_BYTES } from "../protocol/limits.ts";
import type { Sql } from "./log-store.ts";
import { abandonedBefore, checkPart, partCount } from "./staging.ts";

/**
 * Snapshots and compaction on the relay (DESIGN.md "Snapshots and
 * compaction"), as plain synchronous functions over the object's SQL handle
 * like log-store.ts. The relay never builds a snapshot (it never runs the
 * app's DML): replicas upload them and report hashes, the relay stores,
 * compares and serves them, and trims the log behind an agreed one.
 *
 *   relay_snapshot(id, seq, version, size, hash, parts, sub, ts, state)
 *       state: 'upload' (parts arriving), 'sealed' (being checked), 'ready'.
 *       Only 'ready' rows are ever served or used: a restart mid-upload
 *       leaves an upload that nothing reads and the next upload clears.
 *   relay_snapshot_part(id, idx, data)   parts of ≤ 1 MiB, one row each (rows are capped at 2 MB)
 *   relay_hash(seq, sub, hash)           hashes replicas reported at a seq (an upload reports its own)
 *   relay_meta 'trimmed'                 entries at or below it are gone (0: none)
 *
 * Schema entries (relay_schema) are never trimmed: a snapshot names its
 * version, and a replica bootstrapping from it gets the versions up to it.
 */
export const SNAPSHOT_PART_BYTES = STORAGE_CHUNK_BYTES;

/** Step 4 of log-store.ts's STEPS. */
export function migrate(sql: Sql): void {
  sql.exec(`
    CREATE TABLE relay_snapshot(
      id INTEGER PRIMARY KEY,
      seq INTEGER NOT NULL,
      version INTEGER NOT NULL,
      size INTEGER NOT NULL,
      hash TEXT NOT NULL,
      parts INTEGER NOT NULL,
      sub TEXT NOT NULL,
      ts INTEGER NOT NULL,
      state TEXT NOT NULL
    );
    CREATE TABLE relay_snapshot_part(id INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(id, idx)) WITHOUT ROWID;
    CREATE TABLE relay_hash(seq INTEGER NOT NULL, sub TEXT NOT NULL, hash TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY(seq, sub)) WITHOUT ROWID;
    CREATE TABLE relay_client_floor(client TEXT PRIMARY KEY, cseq INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO relay_meta(key, value) VALUES ('trimmed', 0);
  `);
}

/** Entries at or below this seq have been compacted away; a cursor below it needs a snapshot. */
export function trimmed(sql: Sql): number {
  return sql.exec<{ value: number }>("SELECT value FROM relay_meta WHERE key = 'trimmed'").toArray()[0]?.value ?? 0;
}

/** A pull after `after` can be served only from the retained log. */
export function checkRetained(sql: Sql, after: number): void {
  const t = trimmed(sql);
  if (after < t) throw new RelayError("snapshot_required", `entries up to seq ${t} were compacted into a snapshot; the cursor ${after} is older: reset onto the latest snapshot`);
}

/** The highest cseq of `client`'s among compacted entries (push idempotency must outlive them). */
export function clientFloor(sql: Sql, client: string): number {
  return sql.exec<{ cseq: number }>("SELECT cseq FROM relay_client_floor WHERE client = ?", client).toArray()[0]?.cseq ?? 0;
}

export interface SnapshotMeta {
  seq: number;
  version: number;
  size: number;
  hash: string;
}

export interface SnapshotInfo extends SnapshotMeta {
  id: number;
  parts: number;
  sub: string;
  ts: number;
  /** Distinct token subjects that reported this hash at this seq (the uploader included). */
  agreeing: number;
  /** Some replica reported another hash at this seq: never served, never used for trimming. */
  flagged: boolean;
}

const schemaVersionAt = (sql: Sql, seq: number) => sql.exec<{ v: number | null }>("SELECT max(version) AS v FROM relay_schema WHERE seq <= ?", seq).one().v ?? 0;

/** Start an upload: returns its id and how many parts of SNAPSHOT_PART_BYTES it takes. */
export function begin(sql: Sql, meta: SnapshotMeta, sub: string, now: number, head: number): { id: number; parts: number; partBytes: number } {
  if (meta.seq > head) throw new RelayError("bad_request", `snapshot seq ${meta.seq} is past the log's head ${head}`);
  if (meta.seq < trimmed(sql)) throw new RelayError("bad_request", `snapshot seq ${meta.seq} is older than the retained log (from ${trimmed(sql)})`);
  const v = schemaVersionAt(sql, meta.seq);
  if (meta.version !== v) throw new RelayError("schema_mismatch", `the log is at schema version ${v} at seq ${meta.seq}, the snapshot says ${meta.version}`);
  if (!/^[0-9a-f]{64}$/.test(meta.hash)) throw new RelayError("bad_request", "hash must be a lower-case hex SHA-256");
  if (!Number.isSafeInteger(meta.size) || meta.size < 0) throw new RelayError("bad_request", "size must be a non-negative integer");
  // Uploads in parts (staging.ts): abandoned ones are cleared when the next starts.
  sql.exec("DELETE FROM relay_snapshot_part WHERE id IN (SELECT id FROM relay_snapshot WHERE state <> 'ready' AND ts < ?)", abandonedBefore(now));
  sql.exec("DELETE FROM relay_snapshot WHERE state <> 'ready' AND ts < ?", abandonedBefore(now));
  const parts = partCount(meta.size, SNAPSHOT_PART_BYTES);
  const id = sql.exec<{ id: number }>(
    "INSERT INTO relay_snapshot(seq, version, size, hash, parts, sub, ts, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'upload') RETURNING id",
    meta.seq, meta.version, meta.size, meta.hash, parts, sub, now).one().id;
  return { id, parts, partBytes: SNAPSHOT_PART_BYTES };
}

function upload(sql: Sql, id: number, sub: string): { size: number; parts: number; hash: string; seq: number } {
  const row = sql.exec<{ size: number; parts: number; hash: string; seq: number; sub: string; state: string }>("SELECT size, parts, hash, seq, sub, state FROM relay_snapshot WHERE id = ?", id).toArray()[0];
  if (!row || row.state !== "upload" || row.sub !== sub) throw new RelayError("not_found", `no snapshot upload ${id} in progress for this caller`);
  return row;
}

/** Store part `idx` (each but the last exactly SNAPSHOT_PART_BYTES); sending a part again replaces it. */
export function putPart(sql: Sql, id: number, idx: number, data: Uint8Array, sub: string): void {
  const u = upload(sql, id, sub);
  checkPart(idx, data.byteLength, u.size, SNAPSHOT_PART_BYTES);
  sql.exec("INSERT OR REPLACE INTO relay_snapshot_part(id, idx, data) VALUES (?, ?, ?)", id, idx, data);
}

/** First half of a commit: no more parts are taken; returns the bytes to check against the declared hash. */
export function seal(sql: Sql, id: number, sub: string): Uint8Array {
  const u = upload(sql, id, sub);
  const have = sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_snapshot_part WHERE id = ?", id).one().n;
  if (have !== u.parts) throw new RelayError("bad_request", `snapshot upload ${id} has ${have} of ${u.parts} parts`);
  sql.exec("UPDATE relay_snapshot SET state = 'sealed' WHERE id = ?", id);
  return readParts(sql, id, u.size);
}

/** Second half: the one write that makes it visible, with the uploader's hash report. A mismatch drops the upload. */
export function publish(sql: Sql, id: number, sub: string, actual: string, now: number): SnapshotInfo {
  const row = sql.exec<{ hash: string; seq: number }>("SELECT hash, seq FROM relay_snapshot WHERE id = ? AND state = 'sealed'", id).toArray()[0];
  if (!row) throw new RelayError("not_found", `no sealed snapshot upload ${id}`);
  if (row.hash !== actual) {
    drop(sql, id);
    throw new RelayError("bad_request", `snapshot upload ${id}: the parts hash to ${actual}, not the declared ${row.hash}`);
  }
  sql.exec("UPDATE relay_snapshot SET state = 'ready', ts = ? WHERE id = ?", now, id);
  report(sql, row.seq, sub, actual, now);
  return list(sql).find((s) => s.id === id)!;
}

function drop(sql: Sql, id: number): void {
  sql.exec("DELETE FROM relay_snapshot_part WHERE id = ?", id);
  sql.exec("DELETE FROM relay_snapshot WHERE id = ?", id);
}

function readParts(sql: Sql, id: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const { data } of sql.exec<{ data: ArrayBuffer }>("SELECT data FROM relay_snapshot_part WHERE id = ? ORDER BY idx", id)) {
    out.set(new Uint8Array(data), at);
    at += data.byteLength;
  }
  if (at !== size) throw new RelayError("internal", `snapshot ${id} is incomplete in storage`);
  return out;
}

/** A replica's hash of its confirmed state at `seq` (one per subject and seq; a later report replaces it). */
export function report(sql: Sql, seq: number, sub: string, hash: string, now: number): void {
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new RelayError("bad_request", "hash must be a lower-case hex SHA-256");
  sql.exec("INSERT OR REPLACE INTO relay_hash(seq, sub, hash, ts) VALUES (?, ?, ?, ?)", seq, sub, hash, now);
}

/** Published snapshots, newest first, with their agreement. */
export function list(sql: Sql): SnapshotInfo[] {
  return sql.exec<Omit<SnapshotInfo, "flagged"> & { flagged: number }>(`
    SELECT s.id, s.seq, s.version, s.size, s.hash, s.parts, s.sub, s.ts,
      (SELECT count(*) FROM relay_hash h WHERE h.seq = s.seq AND h.hash = s.hash) AS agreeing,
      EXISTS (SELECT 1 FROM relay_hash h WHERE h.seq = s.seq AND h.hash <> s.hash) AS flagged
    FROM relay_snapshot s WHERE s.state = 'ready' ORDER BY s.seq DESC, s.id DESC`).toArray().map((r) => ({ ...r, flagged: r.flagged === 1 }));
}

/** The seq of the newest published snapshot (0: none). */
export function newestSeq(sql: Sql): number {
  return sql.exec<{ s: number | null }>("SELECT max(seq) AS s FROM relay_snapshot WHERE state = 'ready'").one().s ?? 0;
}

/** The newest snapshot that no report contradicts and `quorum` subjects agree on. */
export function latest(sql: Sql, quorum: number, atOrBelow = Infinity): SnapshotInfo | undefined {
  return list(sql).find((s) => !s.flagged && s.agreeing >= quorum && s.seq <= atOrBelow);
}

export function readPart(sql: Sql, id: number, idx: number): Uint8Array {
  const row = sql.exec<{ data: ArrayBuffer }>(
    "SELECT p.data FROM relay_snapshot_part p JOIN relay_snapshot s ON s.id = p.id WHERE p.id = ? AND p.idx = ? AND s.state = 'ready'", id, idx).toArray()[0];
  if (!row) throw new RelayError("not_found", `no part ${idx} of snapshot ${id}`);
  return new Uint8Array(row.data);
}

export interface Retention {
  /** Keep at least this many newest entries (RETAIN_ENTRIES). */
  entries: number;
  /** Keep entries younger than this (RETAIN_SECONDS, in ms here). */
  ms: number;
  /** Distinct subjects that must agree on a snapshot's hash before the log is trimmed behind it (SNAPSHOT_QUORUM). */
  quorum: number;
}

/**
 * Trim the log behind the newest usable snapshot that is outside the
 * retention window: entries at or below its seq go, and older snapshots with
 * them. Never an entry no snapshot covers (the cut is a snapshot's seq),
 * never behind a flagged one. The caller runs it in one transaction.
 */
export function compact(sql: Sql, head: number, now: number, keep: Retention): { trimmed: number; entries: number; snapshots: number } {
  const youngest = sql.exec<{ s: number | null }>("SELECT min(seq) AS s FROM relay_log WHERE ts >= ?", now - keep.ms).one().s;
  const limit = Math.min(head - keep.entries, youngest === null ? head : youngest - 1);
  const s = latest(sql, keep.quorum, limit);
  const before = trimmed(sql);
  if (!s || s.seq <= before) return { trimmed: before, entries: 0, snapshots: 0 };
  sql.exec(`INSERT INTO relay_client_floor(client, cseq) SELECT client, max(cseq) FROM relay_log WHERE seq <= ?1 GROUP BY client
            ON CONFLICT(client) DO UPDATE SET cseq = max(cseq, excluded.cseq)`, s.seq);
  const entries = sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_log WHERE seq <= ?", s.seq).one().n;
  // An entry uploaded in parts keeps its chunks under the key they were staged with (entry-parts.ts).
  sql.exec("DELETE FROM relay_chunk WHERE seq IN (SELECT coalesce(chunk_key, seq) FROM relay_log WHERE seq <= ? AND chunks > 0)", s.seq);
  sql.exec("DELETE FROM relay_log WHERE seq <= ?", s.seq);
  const old = sql.exec<{ id: number }>("SELECT id FROM relay_snapshot WHERE seq < ?", s.seq).toArray();
  for (const { id } of old) drop(sql, id);
  sql.exec("DELETE FROM relay_hash WHERE seq < ?", s.seq);
  sql.exec("UPDATE relay_meta SET value = ? WHERE key = 'trimmed'", s.seq);
  return { trimmed: s.seq, entries, snapshots: old.length };
}

/** Counts for `status`. */
export function usage(sql: Sql): { entries: number; entryBytes: number; snapshotBytes: number } {
  const e = sql.exec<{ n: number; b: number | null }>("SELECT count(*) AS n, sum(size) AS b FROM relay_log").one();
  const s = sql.exec<{ b: number | null }>("SELECT sum(size) AS b FROM relay_snapshot WHERE state = 'ready'").one();
  return { entries: e.n, entryBytes: e.b ?? 0, snapshotBytes: s.b ?? 0 };
}
