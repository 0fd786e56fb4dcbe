import { sameBytes } from "../protocol/codec.ts";
import { ChangesetStream } from "../protocol/changeset-stream.ts";
import { RelayError } from "../protocol/errors.ts";
import { MAX_PARTED_ENTRY_BYTES, STORAGE_CHUNK_BYTES } from "../protocol/limits.ts";
import type { Ack, EntryPart, LogEntry } from "../protocol/messages.ts";
import * as store from "./log-store.ts";
import type { Sql } from "./log-store.ts";
import * as schemaStore from "./schema-store.ts";
import { trimmed } from "./snapshot-store.ts";
import { abandonedBefore, checkCut, checkPart } from "./staging.ts";

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
 * Each upload keeps the part size its client cut it in (staging.ts checkCut:
 * any a request carries), so a relay reconfigured meanwhile still takes it.
 * Idempotent per (client, cseq, part): a part sent again with the same bytes
 * is the same part; with other bytes (a recaptured entry, never acknowledged)
 * the upload starts over from it; a part of an entry the log already holds is
 * compared with the stored bytes and answered with its seq, like a retried
 * push. Each part is validated as soon as the parts before it are in
 * (validate). Uploads abandoned for UPLOAD_TTL_MS are cleared when another
 * starts, and a client's later cseq clears what it staged before (supersede).
 */

/**
 * Step 5 of log-store.ts's STEPS. `part`: the upload's own part size;
 * `checked`: how far its parts are validated (an item boundary), `header`:
 * the table header in force there.
 */
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
      part INTEGER,
      checked INTEGER NOT NULL DEFAULT 0,
      header BLOB,
      PRIMARY KEY(client, cseq)
    ) WITHOUT ROWID;
    ALTER TABLE relay_log ADD COLUMN chunk_key INTEGER;
    INSERT INTO relay_meta(key, value) VALUES ('upload', 0);
  `);
}

export interface PartOptions {
  /** The relay's part size: uploads that name none are cut in it. */
  partBytes: number;
  /** What one request carries (the relay's maxEntryBytes): the largest part, and the largest single change held while validating. */
  maxChangeBytes: number;
  shapes?: schemaStore.ShapeCache;
  sub: string | null;
}

/** The lowest cseq `client` has staged (Infinity: none). */
export function firstStaged(sql: Sql, client: string, now: number): number {
  return sql.exec<{ m: number | null }>("SELECT min(cseq) AS m FROM relay_upload WHERE client = ? AND ts >= ?", client, abandonedBefore(now)).one().m ?? Infinity;
}

/**
 * A client's cseq above `cseq` is arriving: forget what it staged up to
 * `cseq`. A client pushes in cseq order and never past an entry the log has
 * not acknowledged, so it gave those up (discarded, or recaptured under
 * another cseq): kept, they would only hold its later entries back.
 */
export function supersede(sql: Sql, client: string, cseq: number): void {
  clear(sql, "client = ?1 AND cseq <= ?2", client, cseq);
}

/** Forget a staged upload (refused, or replaced by another attempt). */
export function drop(sql: Sql, client: string, cseq: number): void {
  clear(sql, "client = ?1 AND cseq = ?2", client, cseq);
}

/** Forget the uploads `where` selects, their staged chunks first. */
function clear(sql: Sql, where: string, ...args: unknown[]): void {
  sql.exec(`DELETE FROM relay_chunk WHERE seq IN (SELECT -id FROM relay_upload WHERE ${where})`, ...args);
  sql.exec(`DELETE FROM relay_upload WHERE ${where}`, ...args);
}

type Upload = {
  id: number;
  v: number;
  size: number;
  part: number;
  checked: number;
  header: ArrayBuffer | null;
};

/**
 * Store one part. Returns the entry's ack once the log holds it (this part
 * completed it, or it was there already), else no ack. Throws (the caller's
 * transaction rolls back) what a push of the whole entry would, as soon as
 * the parts received in a row from the first show it.
 */
export function putPart(sql: Sql, client: string, part: EntryPart, now: number, opts: PartOptions): { acks: Ack[]; head: number; appended: boolean } {
  const { cseq, size, idx, data } = part;
  if (size > MAX_PARTED_ENTRY_BYTES) throw new RelayError("payload_too_large", `an entry holds at most ${MAX_PARTED_ENTRY_BYTES} bytes, this one ${size}`);
  const cut = part.part ?? opts.partBytes;
  checkCut(cut, opts.partBytes, opts.maxChangeBytes);
  checkPart(idx, data.byteLength, size, cut);
  const maxCseq = store.highestCseq(sql, client);
  if (cseq <= maxCseq) {
    const prior = store.priorEntry(sql, client, cseq, maxCseq);
    if (prior.size !== size || !sameBytes(store.readRange(sql, prior.seq, idx * cut, data.byteLength), data)) {
      throw new RelayError("cseq_conflict", `client ${client} already pushed cseq ${cseq} with different bytes (seq ${prior.seq})`);
    }
    return { acks: [{ cseq, seq: prior.seq }], head: store.head(sql), appended: false };
  }
  const cache = opts.shapes ?? new schemaStore.ShapeCache();
  // Refused at its first part, not after the last: the log is at another version.
  schemaStore.checkVersion(part, cache.version(sql));
  supersede(sql, client, cseq - 1);
  clear(sql, "ts < ?1", abandonedBefore(now));
  const perPart = Math.ceil(cut / STORAGE_CHUNK_BYTES);
  let row = sql.exec<Upload>("SELECT id, v, size, coalesce(part, ?3) AS part, checked, header FROM relay_upload WHERE client = ?1 AND cseq = ?2", client, cseq, opts.partBytes).toArray()[0];
  // Another attempt at this cseq, cut otherwise or with other bytes (never acknowledged, so the client may have recaptured it): start over.
  if (row && (row.v !== part.v || row.size !== size || row.part !== cut)) row = undefined;
  const stored = row && storedPart(sql, -row.id, idx, perPart);
  const again = stored !== undefined && sameBytes(stored, data);
  if (stored && !again) row = undefined;
  if (!row) drop(sql, client, cseq);
  // ts: the last part's time, so an upload is abandoned when it stops, however long it takes.
  if (row) sql.exec("UPDATE relay_upload SET ts = ? WHERE client = ? AND cseq = ?", now, client, cseq);
  else {
    const id = sql.exec<{ value: number }>("UPDATE relay_meta SET value = value + 1 WHERE key = 'upload' RETURNING value").one().value;
    sql.exec("INSERT INTO relay_upload(client, cseq, id, v, size, sub, ts, part) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", client, cseq, id, part.v, size, opts.sub, now, cut);
    row = { id, v: part.v, size, part: cut, checked: 0, header: null };
  }
  // The same part again (a retry): stored and validated already.
  if (again) return { acks: [], head: store.head(sql), appended: false };
  const key = -row.id;
  for (let j = 0; j * STORAGE_CHUNK_BYTES < data.byteLength; j++) {
    const chunk = data.subarray(j * STORAGE_CHUNK_BYTES, (j + 1) * STORAGE_CHUNK_BYTES);
    sql.exec("INSERT INTO relay_chunk(seq, idx, data) VALUES (?, ?, ?)", key, idx * perPart + j, chunk);
  }
  if (!validate(sql, client, part, row, idx, cache, opts)) return { acks: [], head: store.head(sql), appended: false };
  const seq = store.head(sql) + 1;
  const n = sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_chunk WHERE seq = ?", key).one().n;
  store.appendRow(sql, seq, client, cseq, now, size, n, part.v, opts.sub, key);
  sql.exec("DELETE FROM relay_upload WHERE client = ? AND cseq = ?", client, cseq);
  return { acks: [{ cseq, seq }], head: seq, appended: true };
}

/** The bytes of part `idx` of the upload staged under `key`, if it is there. */
function storedPart(sql: Sql, key: number, idx: number, perPart: number): Uint8Array | undefined {
  const chunks = sql.exec<{ data: ArrayBuffer }>("SELECT data FROM relay_chunk WHERE seq = ? AND idx >= ? AND idx < ? ORDER BY idx", key, idx * perPart, (idx + 1) * perPart).toArray();
  if (chunks.length === 0) return undefined;
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.data.byteLength, 0));
  let at = 0;
  for (const { data } of chunks) {
    out.set(new Uint8Array(data), at);
    at += data.byteLength;
  }
  return out;
}

/**
 * Part `idx` is stored: validate what it lets through, as a push of the whole
 * entry would be (every changeset rule, the tables' shapes at its version).
 * Parts may arrive in any order (a client has a few in flight): validation
 * runs over the parts received in a row from the first, resuming where the
 * last request stopped (`checked`, an item boundary, with the table header in
 * force there), so each part is read about once and a broken upload is
 * refused at the part that shows it, not after the last. It reads one storage
 * chunk at a time through ChangesetStream, which holds that chunk and at most
 * one change spanning chunks (≤ maxChangeBytes, re-read from `checked` by the
 * next request): the isolate's memory (128 MB) bounds a request and a row,
 * not the entry. True when the whole entry is here and valid.
 */
function validate(sql: Sql, client: string, part: EntryPart, up: Upload, idx: number, cache: schemaStore.ShapeCache, opts: PartOptions): boolean {
  const key = -up.id;
  const perPart = Math.ceil(up.part / STORAGE_CHUNK_BYTES);
  const from = Math.floor(up.checked / up.part);
  // The parts in a row from the one `checked` is in; nothing new to read unless `idx` is one of them.
  let to = from;
  for (const { i } of sql.exec<{ i: number }>("SELECT idx / ?2 AS i FROM relay_chunk WHERE seq = ?1 AND idx >= ?3 AND idx % ?2 = 0 ORDER BY idx", key, perPart, from * perPart)) {
    if (i !== to) break;
    to++;
  }
  if (idx < from || idx >= to) return false;
  const end = Math.min(to * up.part, up.size);
  const within = up.checked - from * up.part;
  const first = from * perPart + Math.floor(within / STORAGE_CHUNK_BYTES);
  let skip = within % STORAGE_CHUNK_BYTES;
  const stream = new ChangesetStream(opts.maxChangeBytes + STORAGE_CHUNK_BYTES, new Uint8Array(up.header ?? new ArrayBuffer(0)));
  let at = from;
  try {
    // The part just stored is read from the request, not back from storage.
    const rows = sql.exec<{ i: number; data: ArrayBuffer | null }>("SELECT idx AS i, CASE WHEN idx / ?4 = ?5 THEN NULL ELSE data END AS data FROM relay_chunk WHERE seq = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx", key, first, to * perPart, perPart, idx);
    for (const { i, data } of rows) {
      at = Math.floor(i / perPart);
      const j = (i % perPart) * STORAGE_CHUNK_BYTES;
      const chunk = data ? new Uint8Array(data) : part.data.subarray(j, j + STORAGE_CHUNK_BYTES);
      stream.push(chunk.subarray(skip));
      skip = 0;
    }
    if (end === up.size) stream.end();
    const version = cache.version(sql);
    if (version !== 0) schemaStore.checkTables(part, stream.tables, cache.get(sql, version));
  } catch (e) {
    if (e instanceof RelayError) throw new RelayError(e.code, `cseq ${part.cseq} (uploaded in parts), part ${at}: ${e.message}`);
    throw e;
  }
  if (end === up.size) return true;
  sql.exec("UPDATE relay_upload SET checked = ?, header = ? WHERE client = ? AND cseq = ?", end - stream.held, stream.tableHeader, client, part.cseq);
  return false;
}

/**
 * A page for a client that pulls without parts (older than issue 18), with
 * entries above `whole` listed by size (log-store.ts pull): such an entry is
 * never built into a response (one of up to 512 MiB in an isolate of 128 MB),
 * and that client could not hold it either. The page ends before it; a page
 * that begins with it is refused, naming the fix.
 */
export function wholeOnly(page: { entries: LogEntry[]; head: number; more: boolean }, whole: number): { entries: LogEntry[]; head: number; more: boolean } {
  const last = page.entries.at(-1);
  if (last?.size === undefined) return page;
  if (page.entries.length > 1) return { ...page, entries: page.entries.slice(0, -1), more: true };
  throw new RelayError("upgrade_required", `log entry ${last.seq} is ${last.size} bytes, more than one response carries (${whole}): upgrade this client to one that pulls in parts (parts=1)`);
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
