import { sameBytes } from "../protocol/codec.ts";
import { ChangesetStream } from "../protocol/changeset-stream.ts";
import { RelayError } from "../protocol/errors.ts";
import { MAX_PARTED_ENTRY_BYTES, STORAGE_CHUNK_BYTES } from "../protocol/limits.ts";
import type { Ack, EntryPart } from "../protocol/messages.ts";
import * as store from "./log-store.ts";
import type { Sql } from "./log-store.ts";
import * as schemaStore from "./schema-store.ts";
import { trimmed } from "./snapshot-store.ts";
import { abandonedBefore, checkPart } from "./staging.ts";

/**
 * Log entries larger than one request (issue 18), uploaded in numbered parts
 * and appended as ONE log entry when the last part arrives (invariant 7).
 * Plain synchronous functions over the object's SQL handle, like
 * log-store.ts; the caller runs each in one storage transaction.
 *
 *   relay_upload(client, cseq, id, v, size, sub, ts)   an entry being uploaded, invisible to pulls
 *   relay_chunk(-id, idx, data)                        its parts, in chunks of ≤ STORAGE_CHUNK_BYTES (a DO
 *       row holds ≤ 2 MB), staged under a key no seq has; the log row appended on the last part names that
 *       key (relay_log.chunk_key), so the bytes never move. relay_meta 'upload' counts the ids.
 *
 * Idempotent per (client, cseq, part): a part sent again replaces itself
 * (staging.ts: each part's length is fixed), and a part of an entry the log
 * already holds is compared with the stored bytes and answered with its seq,
 * like a retried push. Uploads abandoned for UPLOAD_TTL_MS are cleared when
 * another starts. While a client has an entry staged, its later cseqs are
 * refused, so nothing of that client's lands before it.
 */

/** Step 5 of log-store.ts's STEPS. */
export function migrate(sql: Sql): void {
  sql.exec(`
    CREATE TABLE relay_upload(
      client TEXT NOT NULL,
      cseq INTEGER NOT NULL,
      id INTEGER NOT NULL UNIQUE,
      v INTEGER NOT NULL,
      size INTEGER NOT NULL,
      sub TEXT,
      ts INTEGER NOT NULL,
      PRIMARY KEY(client, cseq)
    ) WITHOUT ROWID;
    ALTER TABLE relay_log ADD COLUMN chunk_key INTEGER;
    INSERT INTO relay_meta(key, value) VALUES ('upload', 0);
  `);
}


export interface PartOptions {
  partBytes: number;
  /** The largest single change held while validating (the relay's maxEntryBytes: what one request could carry anyway). */
  maxChangeBytes: number;
  shapes?: schemaStore.ShapeCache;
  sub: string | null;
}

/** The lowest cseq `client` has staged (Infinity: none). */
export function firstStaged(sql: Sql, client: string, now: number): number {
  return sql.exec<{ m: number | null }>("SELECT min(cseq) AS m FROM relay_upload WHERE client = ? AND ts >= ?", client, abandonedBefore(now)).one().m ?? Infinity;
}

export function stagedFirst(client: string, staged: number, cseq: number): RelayError {
  return new RelayError("cseq_conflict", `client ${client} is uploading cseq ${staged} in parts: cseq ${cseq} cannot land before it (finish that upload first)`);
}

/** Forget a staged upload (refused, or replaced by another attempt). */
export function drop(sql: Sql, client: string, cseq: number): void {
  sql.exec("DELETE FROM relay_chunk WHERE seq = (SELECT -id FROM relay_upload WHERE client = ?1 AND cseq = ?2)", client, cseq);
  sql.exec("DELETE FROM relay_upload WHERE client = ? AND cseq = ?", client, cseq);
}

/**
 * Store one part. Returns the entry's ack once the log holds it (this part
 * completed it, or it was there already), else no ack. Throws (the caller's
 * transaction rolls back) what a push of the whole entry would.
 */
export function putPart(sql: Sql, client: string, part: EntryPart, now: number, opts: PartOptions): { acks: Ack[]; head: number; appended: boolean } {
  const { cseq, size, idx, data } = part;
  if (size > MAX_PARTED_ENTRY_BYTES) throw new RelayError("payload_too_large", `an entry holds at most ${MAX_PARTED_ENTRY_BYTES} bytes, this one ${size}`);
  checkPart(idx, data.byteLength, size, opts.partBytes);
  const maxCseq = store.highestCseq(sql, client);
  if (cseq <= maxCseq) {
    const prior = store.priorEntry(sql, client, cseq, maxCseq);
    if (prior.size !== size || !sameBytes(store.readRange(sql, prior.seq, idx * opts.partBytes, data.byteLength), data)) {
      throw new RelayError("cseq_conflict", `client ${client} already pushed cseq ${cseq} with different bytes (seq ${prior.seq})`);
    }
    return { acks: [{ cseq, seq: prior.seq }], head: store.head(sql), appended: false };
  }
  const staged = firstStaged(sql, client, now);
  if (staged < cseq) throw stagedFirst(client, staged, cseq);
  sql.exec("DELETE FROM relay_chunk WHERE seq IN (SELECT -id FROM relay_upload WHERE ts < ?)", abandonedBefore(now));
  sql.exec("DELETE FROM relay_upload WHERE ts < ?", abandonedBefore(now));
  let row = sql.exec<{ id: number; v: number; size: number }>("SELECT id, v, size FROM relay_upload WHERE client = ? AND cseq = ?", client, cseq).toArray()[0];
  // Another attempt at this cseq with other bytes (never acknowledged, so the client may have recaptured it): start over.
  if (row && (row.v !== part.v || row.size !== size)) {
    drop(sql, client, cseq);
    row = undefined;
  }
  // ts: the last part's time, so an upload is abandoned when it stops, however long it takes.
  if (row) sql.exec("UPDATE relay_upload SET ts = ? WHERE client = ? AND cseq = ?", now, client, cseq);
  else {
    const id = sql.exec<{ value: number }>("UPDATE relay_meta SET value = value + 1 WHERE key = 'upload' RETURNING value").one().value;
    sql.exec("INSERT INTO relay_upload(client, cseq, id, v, size, sub, ts) VALUES (?, ?, ?, ?, ?, ?, ?)", client, cseq, id, part.v, size, opts.sub, now);
    row = { id, v: part.v, size };
  }
  const key = -row.id;
  const perPart = Math.ceil(opts.partBytes / STORAGE_CHUNK_BYTES);
  for (let j = 0; j * STORAGE_CHUNK_BYTES < data.byteLength; j++) {
    const chunk = data.subarray(j * STORAGE_CHUNK_BYTES, (j + 1) * STORAGE_CHUNK_BYTES);
    sql.exec("INSERT OR REPLACE INTO relay_chunk(seq, idx, data) VALUES (?, ?, ?)", key, idx * perPart + j, chunk);
  }
  // Each part has its fixed length, so the bytes add up to the size exactly when every part is here.
  const have = sql.exec<{ b: number | null }>("SELECT sum(length(data)) AS b FROM relay_chunk WHERE seq = ?", key).one().b ?? 0;
  if (have < size) return { acks: [], head: store.head(sql), appended: false };
  const seq = complete(sql, client, part, key, now, opts);
  return { acks: [{ cseq, seq }], head: seq, appended: true };
}

/**
 * The last part is in: check the whole entry as a push would (the `v` rule,
 * every changeset rule, the tables' shapes) and append it as one log entry,
 * whose row names the chunks where they were staged.
 * Validation reads the chunks one at a time through ChangesetStream, which
 * holds one chunk and at most one change spanning chunks (≤ maxChangeBytes),
 * so the isolate's memory (128 MB) bounds the chunk and a row, not the entry.
 */
function complete(sql: Sql, client: string, part: EntryPart, key: number, now: number, opts: PartOptions): number {
  const cache = opts.shapes ?? new schemaStore.ShapeCache();
  const version = cache.version(sql);
  const entry = { cseq: part.cseq, v: part.v };
  schemaStore.checkVersion(entry, version);
  const shapes = version === 0 ? undefined : cache.get(sql, version);
  const stream = new ChangesetStream(opts.maxChangeBytes + STORAGE_CHUNK_BYTES);
  const chunks = sql.exec<{ data: ArrayBuffer }>("SELECT data FROM relay_chunk WHERE seq = ? ORDER BY idx", key);
  let n = 0;
  try {
    for (const { data } of chunks) {
      stream.push(new Uint8Array(data));
      n++;
    }
    stream.end();
  } catch (e) {
    if (e instanceof RelayError) throw new RelayError(e.code, `cseq ${part.cseq} (uploaded in parts): ${e.message}`);
    throw e;
  }
  if (shapes) schemaStore.checkTables(entry, stream.tables, shapes);
  const seq = store.head(sql) + 1;
  store.appendRow(sql, seq, client, part.cseq, now, part.size, n, part.v, opts.sub, key);
  sql.exec("DELETE FROM relay_upload WHERE client = ? AND cseq = ?", client, part.cseq);
  return seq;
}

/**
 * Part `idx` of entry `seq`, as a pull in parts fetches it (the same part
 * size as uploads). A seq the log no longer holds is `snapshot_required` when
 * compaction took it.
 */
export function readPart(sql: Sql, seq: number, idx: number, partBytes: number): Uint8Array {
  const row = sql.exec<{ size: number }>("SELECT size FROM relay_log WHERE seq = ?", seq).toArray()[0];
  if (!row) {
    if (seq <= trimmed(sql)) throw new RelayError("snapshot_required", `entry ${seq} was compacted into a snapshot: reset onto it`);
    throw new RelayError("not_found", `no log entry ${seq} with a changeset`);
  }
  const from = idx * partBytes;
  if (!Number.isSafeInteger(idx) || idx < 0 || (from >= row.size && !(idx === 0 && row.size === 0))) throw new RelayError("bad_request", `entry ${seq} has no part ${idx}`);
  return store.readRange(sql, seq, from, Math.min(partBytes, row.size - from));
}
