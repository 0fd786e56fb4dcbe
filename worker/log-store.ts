import { sameBytes } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { PULL_BYTE_BUDGET, STORAGE_CHUNK_BYTES } from "../protocol/limits.ts";
import type { Ack, LogEntry, PushEntry, PushResponse } from "../protocol/messages.ts";

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

const SCHEMA_VERSION = 2;

/** Create the schema once per object, gated on a version row. */
export function migrate(sql: Sql): void {
  sql.exec("CREATE TABLE IF NOT EXISTS relay_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
  const row = sql.exec<{ value: number }>("SELECT value FROM relay_meta WHERE key = 'schema'").toArray()[0];
  if (row && row.value >= SCHEMA_VERSION) return;
  // v2: who pushed each entry (the token's sub), and which sub owns each client id (worker/identity.ts).
  if (row?.value === 1) sql.exec("ALTER TABLE relay_log ADD COLUMN sub TEXT");
  // `body` holds changesets up to one chunk; larger ones live in relay_chunk
  // because a DO SQLite row or BLOB is capped at 2 MB.
  sql.exec(`
    CREATE TABLE IF NOT EXISTS relay_log(
      seq INTEGER PRIMARY KEY,
      client TEXT NOT NULL,
      cseq INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      size INTEGER NOT NULL,
      chunks INTEGER NOT NULL,
      body BLOB,
      sub TEXT,
      UNIQUE(client, cseq)
    );
    CREATE TABLE IF NOT EXISTS relay_client(
      client TEXT PRIMARY KEY,
      sub TEXT NOT NULL,
      since INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS relay_chunk(
      seq INTEGER NOT NULL,
      idx INTEGER NOT NULL,
      data BLOB NOT NULL,
      PRIMARY KEY(seq, idx)
    ) WITHOUT ROWID;
    INSERT OR REPLACE INTO relay_meta(key, value) VALUES ('schema', ${SCHEMA_VERSION});
  `);
}

export function head(sql: Sql): number {
  return sql.exec<{ h: number | null }>("SELECT max(seq) AS h FROM relay_log").one().h ?? 0;
}

function readChangeset(sql: Sql, seq: number, size: number, chunks: number, body: ArrayBuffer | null): Uint8Array {
  if (chunks === 0) return new Uint8Array(body ?? new ArrayBuffer(0));
  const out = new Uint8Array(size);
  let at = 0;
  for (const { data } of sql.exec<{ data: ArrayBuffer }>("SELECT data FROM relay_chunk WHERE seq = ? ORDER BY idx", seq)) {
    out.set(new Uint8Array(data), at);
    at += data.byteLength;
  }
  if (at !== size) throw new RelayError("internal", `log entry ${seq} is incomplete in storage`);
  return out;
}


function append(sql: Sql, seq: number, client: string, entry: PushEntry, ts: number, sub: string | null): void {
  const { changeset } = entry;
  if (changeset.byteLength <= STORAGE_CHUNK_BYTES) {
    sql.exec("INSERT INTO relay_log(seq, client, cseq, ts, size, chunks, body, sub) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
      seq, client, entry.cseq, ts, changeset.byteLength, changeset, sub);
    return;
  }
  const chunks = Math.ceil(changeset.byteLength / STORAGE_CHUNK_BYTES);
  sql.exec("INSERT INTO relay_log(seq, client, cseq, ts, size, chunks, body, sub) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
    seq, client, entry.cseq, ts, changeset.byteLength, chunks, sub);
  for (let i = 0; i < chunks; i++) {
    const part = changeset.subarray(i * STORAGE_CHUNK_BYTES, (i + 1) * STORAGE_CHUNK_BYTES);
    sql.exec("INSERT INTO relay_chunk(seq, idx, data) VALUES (?, ?, ?)", seq, i, part);
  }
}

/**
 * Append a validated push. Idempotent per (client, cseq): the same bytes again
 * return the original seq; other bytes, or a cseq below the client's highest,
 * are `cseq_conflict`. Throws before writing anything that would break the
 * all-or-nothing rule — the caller runs this inside `transactionSync`, so a
 * throw after some inserts rolls them back too.
 */
export function push(sql: Sql, client: string, entries: readonly PushEntry[], now: number, knownHead?: number, sub: string | null = null): PushResponse & { appended: LogEntry[] } {
  // `knownHead`: the head a caller appending several pushes in one turn got
  // back from the previous one, saving the query. `sub`: the token's, recorded
  // with each entry appended.
  let h = knownHead ?? head(sql);
  let maxCseq = sql.exec<{ m: number | null }>("SELECT max(cseq) AS m FROM relay_log WHERE client = ?", client).one().m ?? 0;
  const acks: Ack[] = [];
  const appended: LogEntry[] = [];
  for (const entry of entries) {
    // Only a cseq at or below the client's highest can be a retry: new
    // entries (the usual case) skip the lookup.
    if (entry.cseq <= maxCseq) {
      const prior = sql
        .exec<{ seq: number; size: number; chunks: number; body: ArrayBuffer | null }>(
          "SELECT seq, size, chunks, body FROM relay_log WHERE client = ? AND cseq = ?", client, entry.cseq)
        .toArray()[0];
      if (!prior) throw new RelayError("cseq_conflict", `cseq ${entry.cseq} is not above client ${client}'s highest cseq ${maxCseq}`);
      if (!sameBytes(readChangeset(sql, prior.seq, prior.size, prior.chunks, prior.body), entry.changeset)) {
        throw new RelayError("cseq_conflict", `client ${client} already pushed cseq ${entry.cseq} with different bytes (seq ${prior.seq})`);
      }
      acks.push({ cseq: entry.cseq, seq: prior.seq });
      continue;
    }
    h += 1;
    append(sql, h, client, entry, now, sub);
    maxCseq = entry.cseq;
    acks.push({ cseq: entry.cseq, seq: h });
    appended.push({ seq: h, client, cseq: entry.cseq, changeset: entry.changeset, ts: now });
  }
  return { acks, head: h, appended };
}

/**
 * Entries after `after`, at most `limit`, cut once the page holds
 * `budget` changeset bytes (but never empty while entries remain).
 */
export function pull(sql: Sql, after: number, limit: number, budget = PULL_BYTE_BUDGET): { entries: LogEntry[]; head: number; more: boolean } {
  const h = head(sql);
  const entries: LogEntry[] = [];
  let bytes = 0;
  // Iterated lazily and left early, so a page never reads rows past its budget.
  const rows = sql.exec<{ seq: number; client: string; cseq: number; ts: number; size: number; chunks: number; body: ArrayBuffer | null }>(
    "SELECT seq, client, cseq, ts, size, chunks, body FROM relay_log WHERE seq > ? ORDER BY seq LIMIT ?", after, limit);
  for (const r of rows) {
    if (entries.length > 0 && bytes + r.size > budget) break;
    entries.push({ seq: r.seq, client: r.client, cseq: r.cseq, ts: r.ts, changeset: readChangeset(sql, r.seq, r.size, r.chunks, r.body) });
    bytes += r.size;
  }
  const last = entries.at(-1)?.seq ?? Math.max(after, 0);
  return { entries, head: h, more: last < h };
}
