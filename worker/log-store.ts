import { sameBytes } from "../protocol/codec.ts";
import type { TableHeader } from "../protocol/changeset.ts";
import { RelayError } from "../protocol/errors.ts";
import { PULL_BYTE_BUDGET, STORAGE_CHUNK_BYTES } from "../protocol/limits.ts";
import type { Ack, LogEntry, PushEntry, PushResponse } from "../protocol/messages.ts";
import type { SchemaVersion } from "../protocol/schema.ts";
import * as schemaStore from "./schema-store.ts";
import * as snapshotStore from "./snapshot-store.ts";
import * as entryParts from "./entry-parts.ts";

/**
 * The rules of the log, as plain functions over a Durable Object SQL handle.
 * Every function here is synchronous, so each call runs without interleaving
 * (a DO never runs other events while synchronous code runs) and, inside
 * `transactionSync`, commits or rolls back whole.
 */

/** A value as the DO's SQLite returns it (BLOBs as ArrayBuffer). */
export type SqlValue = ArrayBuffer | string | number | null;

/**
 * The part of `ctx.storage.sql` we use, spelled out so the rules read clearly
 * and run outside workerd too (test/support/do-sql.ts adapts node:sqlite to
 * it for the unit tests). A cursor is lazy and single-pass.
 */
export interface Sql {
  exec<T extends Record<string, SqlValue>>(query: string, ...bindings: unknown[]): Iterable<T> & { toArray(): T[]; one(): T };
}

/**
 * The relay's own tables, one ordered upgrade path: step i takes an object's
 * tables from version i to i + 1, a new object runs them all, and the
 * `schema` row in relay_meta says how far an object has come. Each step runs
 * once, so a step never changes: later needs are a new step at the end.
 */
const STEPS: ((sql: Sql) => void)[] = [
  // 1: the log. `body` holds changesets up to one chunk; larger ones live in
  // relay_chunk because a DO SQLite row or BLOB is capped at 2 MB.
  (sql) => sql.exec(`
    CREATE TABLE relay_log(
      seq INTEGER PRIMARY KEY,
      client TEXT NOT NULL,
      cseq INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      size INTEGER NOT NULL,
      chunks INTEGER NOT NULL,
      body BLOB,
      UNIQUE(client, cseq)
    );
    CREATE TABLE relay_chunk(
      seq INTEGER NOT NULL,
      idx INTEGER NOT NULL,
      data BLOB NOT NULL,
      PRIMARY KEY(seq, idx)
    ) WITHOUT ROWID;
  `),
  // 2: who pushed each entry (the token's sub), and which sub owns each client id (worker/identity.ts).
  (sql) => sql.exec(`
    ALTER TABLE relay_log ADD COLUMN sub TEXT;
    CREATE TABLE relay_client(
      client TEXT PRIMARY KEY,
      sub TEXT NOT NULL,
      since INTEGER NOT NULL
    ) WITHOUT ROWID;
  `),
  // 3: the schema in the log (schema-store.ts).
  (sql) => schemaStore.migrate(sql),
  // 4: snapshots and compaction (snapshot-store.ts).
  (sql) => snapshotStore.migrate(sql),
  // 5: entries uploaded in parts, staged until their last part (entry-parts.ts).
  (sql) => entryParts.migrate(sql),
];

/** Bring this object's tables to the last step; cheap when they are there already. */
export function migrate(sql: Sql): void {
  sql.exec("CREATE TABLE IF NOT EXISTS relay_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
  const at = sql.exec<{ value: number }>("SELECT value FROM relay_meta WHERE key = 'schema'").toArray()[0]?.value ?? 0;
  for (let v = at; v < STEPS.length; v++) {
    STEPS[v]!(sql);
    sql.exec("INSERT OR REPLACE INTO relay_meta(key, value) VALUES ('schema', ?)", v + 1);
  }
}

/** Data entries and schema entries share the one sequence of seqs (compaction may have removed every entry up to the head). */
export function head(sql: Sql): number {
  return sql.exec<{ h: number }>("SELECT max(coalesce((SELECT max(seq) FROM relay_log), 0), coalesce((SELECT max(seq) FROM relay_schema), 0), coalesce((SELECT value FROM relay_meta WHERE key = 'trimmed'), 0)) AS h").one().h;
}

/**
 * The chunks of entry `?1` are keyed by its seq, or, for an entry uploaded in
 * parts, by the key they were staged under (entry-parts.ts: `chunk_key`, so
 * appending it moves no bytes).
 */
const CHUNK_KEY = "(SELECT coalesce(chunk_key, seq) FROM relay_log WHERE seq = ?1)";

function readChangeset(sql: Sql, seq: number, size: number, chunks: number, body: ArrayBuffer | null): Uint8Array {
  if (chunks === 0) return new Uint8Array(body ?? new ArrayBuffer(0));
  const out = new Uint8Array(size);
  let at = 0;
  for (const { data } of sql.exec<{ data: ArrayBuffer }>(`SELECT data FROM relay_chunk WHERE seq = ${CHUNK_KEY} ORDER BY idx`, seq)) {
    out.set(new Uint8Array(data), at);
    at += data.byteLength;
  }
  if (at !== size) throw new RelayError("internal", `log entry ${seq} is incomplete in storage`);
  return out;
}


/**
 * Bytes `from..from+length` of entry `seq`'s changeset, read with substr() so
 * that only those bytes leave storage (a part of a large entry: a pull in
 * parts, or a part sent again after its entry landed).
 */
export function readRange(sql: Sql, seq: number, from: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const inline = sql.exec<{ d: ArrayBuffer | null }>("SELECT substr(body, ?, ?) AS d FROM relay_log WHERE seq = ? AND chunks = 0", from + 1, length, seq).toArray()[0];
  if (inline) {
    out.set(new Uint8Array(inline.d ?? new ArrayBuffer(0)));
    return out;
  }
  let at = 0; // where the chunk starts in the changeset
  let got = 0;
  for (const { key, idx, n } of sql.exec<{ key: number; idx: number; n: number }>(`SELECT seq AS key, idx, length(data) AS n FROM relay_chunk WHERE seq = ${CHUNK_KEY} ORDER BY idx`, seq).toArray()) {
    const lo = Math.max(from, at);
    const hi = Math.min(from + length, at + n);
    if (lo < hi) {
      const { d } = sql.exec<{ d: ArrayBuffer }>("SELECT substr(data, ?, ?) AS d FROM relay_chunk WHERE seq = ? AND idx = ?", lo - at + 1, hi - lo, key, idx).one();
      out.set(new Uint8Array(d), lo - from);
      got += hi - lo;
    }
    at += n;
  }
  if (got !== length) throw new RelayError("internal", `log entry ${seq} is incomplete in storage`);
  return out;
}

/** A log row whose changeset lives in relay_chunk: `chunks` rows under `chunkKey` (null: its seq), written by the caller. */
export function appendRow(sql: Sql, seq: number, client: string, cseq: number, ts: number, size: number, chunks: number, v: number, sub: string | null, chunkKey: number | null = null): void {
  sql.exec("INSERT INTO relay_log(seq, client, cseq, ts, size, chunks, body, v, sub, chunk_key) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)", seq, client, cseq, ts, size, chunks, v, sub, chunkKey);
}

function append(sql: Sql, seq: number, client: string, entry: PushEntry, ts: number, sub: string | null): void {
  const { changeset } = entry;
  if (changeset.byteLength <= STORAGE_CHUNK_BYTES) {
    sql.exec("INSERT INTO relay_log(seq, client, cseq, ts, size, chunks, body, v, sub) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
      seq, client, entry.cseq, ts, changeset.byteLength, changeset, entry.v ?? 0, sub);
    return;
  }
  const chunks = Math.ceil(changeset.byteLength / STORAGE_CHUNK_BYTES);
  appendRow(sql, seq, client, entry.cseq, ts, changeset.byteLength, chunks, entry.v ?? 0, sub);
  for (let i = 0; i < chunks; i++) {
    const part = changeset.subarray(i * STORAGE_CHUNK_BYTES, (i + 1) * STORAGE_CHUNK_BYTES);
    sql.exec("INSERT INTO relay_chunk(seq, idx, data) VALUES (?, ?, ?)", seq, i, part);
  }
}

/** What a push carries besides its entries, and what its caller knows. */
export interface PushOptions {
  /** Schema versions the log may lack, appended before the entries (schema-store.ts). */
  schema?: readonly SchemaVersion[];
  /** Whether this caller may add a schema version (the relay's SCHEMA_ROLE). Default true. */
  mayChangeSchema?: boolean;
  /** The object's cache of the log's version and shapes (cleared when a push fails). */
  shapes?: schemaStore.ShapeCache;
  /** The token's sub, recorded with each entry appended, data and schema alike (null: unknown, as before identities). */
  sub?: string | null;
  /** Each entry's table headers as the Worker's validation read them (push-args.ts); scanned here without. */
  tables?: readonly (readonly TableHeader[])[] | undefined;
}

/**
 * Append a validated push. Idempotent per (client, cseq): the same bytes again
 * return the original seq; other bytes, or a cseq below the client's highest,
 * are `cseq_conflict`. A new entry must fit the log's schema (schema-store.ts).
 * Throws before writing anything that would break the all-or-nothing rule —
 * the caller runs this inside `transactionSync`, so a throw after some
 * inserts (or DDL) rolls them back too.
 */
export function push(sql: Sql, client: string, entries: readonly PushEntry[], now: number, knownHead?: number, opts: PushOptions = {}): PushResponse & { appended: LogEntry[] } {
  // `knownHead`: the head a caller appending several pushes in one turn got
  // back from the previous one, saving the query.
  let h = knownHead ?? head(sql);
  const sub = opts.sub ?? null;
  const appended: LogEntry[] = [];
  const cache = opts.shapes ?? new schemaStore.ShapeCache();
  let version = cache.version(sql);
  for (const sv of opts.schema ?? []) {
    const added = schemaStore.addVersion(sql, sv, version, { seq: h + 1, client, sub, ts: now, mayChange: opts.mayChangeSchema ?? true });
    if (!added) continue;
    appended.push(added);
    h = added.seq;
    version = sv.version;
    cache.added(version);
  }
  const shapes = version === 0 ? undefined : () => cache.get(sql, version);
  let maxCseq = highestCseq(sql, client);
  // What this client staged in parts and gave up (entry-parts.ts supersede).
  const staged = entryParts.firstStaged(sql, client, now);
  const acks: Ack[] = [];
  for (const [i, entry] of entries.entries()) {
    // Only a cseq at or below the client's highest can be a retry: new
    // entries (the usual case) skip the lookup.
    if (entry.cseq <= maxCseq) {
      const prior = priorEntry(sql, client, entry.cseq, maxCseq);
      if (!sameBytes(readChangeset(sql, prior.seq, prior.size, prior.chunks, prior.body), entry.changeset)) {
        throw new RelayError("cseq_conflict", `client ${client} already pushed cseq ${entry.cseq} with different bytes (seq ${prior.seq})`);
      }
      acks.push({ cseq: entry.cseq, seq: prior.seq });
      continue;
    }
    if (entry.cseq >= staged) entryParts.supersede(sql, client, entry.cseq);
    schemaStore.checkEntry(entry, version, shapes, opts.tables?.[i]);
    h += 1;
    append(sql, h, client, entry, now, sub);
    maxCseq = entry.cseq;
    acks.push({ cseq: entry.cseq, seq: h });
    appended.push({ seq: h, client, cseq: entry.cseq, changeset: entry.changeset, ts: now, v: entry.v ?? 0 });
  }
  const added = appended.filter((e) => e.schema).map((e) => ({ version: e.v ?? 0, seq: e.seq }));
  return { acks, head: h, appended, ...(added.length > 0 ? { schema: added } : {}) };
}

/** The highest cseq of `client`'s the log has held (compacted entries included): a push at or below it can only be a retry. */
export function highestCseq(sql: Sql, client: string): number {
  return Math.max(sql.exec<{ m: number | null }>("SELECT max(cseq) AS m FROM relay_log WHERE client = ?", client).one().m ?? 0, snapshotStore.clientFloor(sql, client));
}

/**
 * The stored entry a push of `cseq` (at or below the client's highest) retries;
 * none is `cseq_conflict`, or `snapshot_required` when compaction took it.
 */
export function priorEntry(sql: Sql, client: string, cseq: number, maxCseq: number): { seq: number; size: number; chunks: number; body: ArrayBuffer | null } {
  const prior = sql
    .exec<{ seq: number; size: number; chunks: number; body: ArrayBuffer | null }>(
      "SELECT seq, size, chunks, body FROM relay_log WHERE client = ? AND cseq = ?", client, cseq)
    .toArray()[0];
  if (prior) return prior;
  // A retry of an entry compacted since (its ack was lost): the snapshot holds it.
  if (cseq <= snapshotStore.clientFloor(sql, client)) throw new RelayError("snapshot_required", `cseq ${cseq} of client ${client} was compacted into a snapshot: reset onto it`);
  throw new RelayError("cseq_conflict", `cseq ${cseq} is not above client ${client}'s highest cseq ${maxCseq}`);
}

/**
 * Entries after `after`, at most `limit`, cut once the page holds
 * `budget` changeset bytes (but never empty while entries remain).
 * `partedAbove`: an entry larger is listed by its size, without its
 * changeset (fetched in parts: readRange), and ends the page, so a page
 * never holds more than one.
 */
export function pull(sql: Sql, after: number, limit: number, budget = PULL_BYTE_BUDGET, partedAbove = Infinity): { entries: LogEntry[]; head: number; more: boolean } {
  snapshotStore.checkRetained(sql, after);
  const h = head(sql);
  const entries: LogEntry[] = [];
  let bytes = 0;
  // Iterated lazily and left early, so a page never reads rows past its budget.
  // Schema entries merged in by seq: both sides are read in seq order and SQLite merges them.
  const rows = sql.exec<{ seq: number; client: string; cseq: number; ts: number; size: number; chunks: number; body: ArrayBuffer | null; v: number; statements: string | null }>(
    `SELECT seq, client, cseq, ts, size, chunks, body, v, NULL AS statements FROM relay_log WHERE seq > ?1
     UNION ALL ${schemaStore.SCHEMA_ENTRIES} ORDER BY seq LIMIT ?2`, after, limit);
  for (const r of rows) {
    if (r.size > partedAbove && r.statements === null) {
      entries.push({ seq: r.seq, client: r.client, cseq: r.cseq, ts: r.ts, changeset: new Uint8Array(0), v: r.v, size: r.size });
      break;
    }
    if (entries.length > 0 && bytes + r.size > budget) break;
    const e: LogEntry = { seq: r.seq, client: r.client, cseq: r.cseq, ts: r.ts, changeset: readChangeset(sql, r.seq, r.size, r.chunks, r.body), v: r.v };
    if (r.statements !== null) e.schema = JSON.parse(r.statements) as string[];
    entries.push(e);
    bytes += r.size;
  }
  const last = entries.at(-1)?.seq ?? Math.max(after, 0);
  return { entries, head: h, more: last < h };
}
