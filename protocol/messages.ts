import { RelayError } from "./errors.ts";
import { MAX_ENTRIES_PER_PUSH } from "./limits.ts";
import { parseSchemaVersions } from "./schema.ts";
import { array, ascending, bad, bool, bytes, map, name, nonNegativeInt, positiveInt } from "./validate.ts";

/**
 * The HTTP messages of protocol v1 (the socket's frames are in frames.ts).
 * Every message crossing the wire is decoded (codec.ts) and then validated
 * here, on both sides. Each type is the return type of its validator, so a
 * type and its check cannot drift apart.
 *
 *   POST /v1/db/:db/push   PushRequest → PushResponse
 *   GET  /v1/db/:db/pull?after&limit   → PullResponse
 *   GET  /v1/health                    → HealthResponse (JSON)
 */

/** A captured transaction, as pushed. */
export interface PushEntry {
  cseq: number;
  changeset: Uint8Array;
  /** The schema version it was captured under; absent: 0 (a log without schema entries). Always set by the parsers. */
  v?: number;
}
/**
 * Part `idx` of entry `cseq` pushed in parts (a relay that names
 * `limits.partBytes`): bytes `idx × partBytes …` of its changeset; `size`:
 * the whole changeset's, `v`: the schema version it was captured under.
 */
export interface EntryPart {
  cseq: number;
  v: number;
  size: number;
  idx: number;
  data: Uint8Array;
  /** The part size the client cut this upload in (absent: the relay's; older clients). */
  part?: number;
}
export type PushRequest = ReturnType<typeof parsePushRequest>;
export type Ack = ReturnType<typeof parseAck>;
/** `schema`: the versions this push added to the log and their seqs (absent when none). */
export interface PushResponse {
  acks: Ack[];
  head: number;
  schema?: SchemaAck[];
}
export type SchemaAck = { version: number; seq: number };
export type PullResponse = ReturnType<typeof parsePullResponse>;
export type PullQuery = ReturnType<typeof parsePullQuery>;

export interface HealthResponse {
  ok: true;
  version: string;
  protocol: { min: number; max: number };
  /**
   * The largest changeset one request may carry (bytes); absent from relays
   * before 0.1.0's identity changes. `partBytes` and `maxPartedEntryBytes`:
   * the relay takes and serves larger entries in parts of `partBytes`, up to
   * `maxPartedEntryBytes` (limits.ts); absent from relays without parts.
   */
  limits?: { maxEntryBytes: number; partBytes?: number; maxPartedEntryBytes?: number };
}

/** The schema version an entry was captured under (protocol/schema.ts); 0, or absent: a log without schema entries. */
function schemaVersionOf(v: unknown, what: string): number {
  return v === undefined ? 0 : nonNegativeInt(v, what);
}

export function parsePushEntry(v: unknown, what = "entry"): PushEntry {
  const o = map(v, what);
  return { cseq: positiveInt(o.cseq, `${what}.cseq`), changeset: bytes(o.changeset, `${what}.changeset`), v: schemaVersionOf(o.v, `${what}.v`) };
}

/**
 * Validates shape and the per-request cseq rules; changeset bytes are checked
 * by the changeset reader. `schema`: versions the log may lack, appended
 * (in order, before the entries) when it does.
 */
export function parsePushRequest(v: unknown) {
  const o = map(v, "push body");
  const client = name(o.client, "client");
  const schema = o.schema === undefined ? [] : parseSchemaVersions(o.schema);
  const raw = array(o.entries, "entries");
  if (raw.length === 0 && schema.length === 0) bad("entries must not be empty");
  if (raw.length > MAX_ENTRIES_PER_PUSH) {
    throw new RelayError("too_many_entries", `at most ${MAX_ENTRIES_PER_PUSH} entries per push, got ${raw.length}`);
  }
  const entries = raw.map((e, i) => parsePushEntry(e, `entries[${i}]`));
  ascending(entries, (e) => e.cseq, "entries (cseq)");
  return { client, schema, entries };
}

export function parseAck(v: unknown, what = "ack") {
  const o = map(v, what);
  return { cseq: positiveInt(o.cseq, `${what}.cseq`), seq: positiveInt(o.seq, `${what}.seq`) };
}

export function parsePushResponse(v: unknown): PushResponse {
  const o = map(v, "push response");
  const res: PushResponse = { acks: parseAcks(o.acks), head: nonNegativeInt(o.head, "head") };
  if (o.schema !== undefined) {
    res.schema = array(o.schema, "schema").map((x, i) => {
      const a = map(x, `schema[${i}]`);
      return { version: positiveInt(a.version, `schema[${i}].version`), seq: positiveInt(a.seq, `schema[${i}].seq`) };
    });
  }
  return res;
}

export function parseAcks(v: unknown) {
  return array(v, "acks").map((a, i) => parseAck(a, `acks[${i}]`));
}

/**
 * A log entry. A data entry holds a changeset captured under schema version
 * `v`. A schema entry holds version `v`'s statements in `schema`, with cseq 0
 * and an empty changeset: every replica runs them at this point of the log.
 */
export interface LogEntry {
  seq: number;
  client: string;
  cseq: number;
  changeset: Uint8Array;
  /** Milliseconds since the epoch when the relay appended the entry. */
  ts: number;
  /** Data entry: the schema version it was captured under; schema entry: its version. Absent: 0. Always set by the parser. */
  v?: number;
  schema?: string[];
  /**
   * Set only in pulls that ask for parts (`parts=1`): the changeset is not in
   * this message (it is empty here) but `size` bytes, fetched with
   * GET /v1/db/:db/entries/:seq/parts/:idx (raw bytes, part by part).
   */
  size?: number;
}

export function parseLogEntry(v: unknown, what = "entry"): LogEntry {
  const o = map(v, what);
  const e: LogEntry = {
    seq: positiveInt(o.seq, `${what}.seq`),
    client: name(o.client, `${what}.client`),
    cseq: 0,
    changeset: bytes(o.changeset, `${what}.changeset`),
    ts: nonNegativeInt(o.ts, `${what}.ts`),
    v: schemaVersionOf(o.v, `${what}.v`),
  };
  if (o.schema === undefined) {
    e.cseq = positiveInt(o.cseq, `${what}.cseq`);
    if (o.size !== undefined) {
      e.size = positiveInt(o.size, `${what}.size`);
      if (e.changeset.byteLength > 0) bad(`${what}: an entry listed by size carries no changeset`);
    }
    return e;
  }
  e.schema = parseSchemaVersions([{ version: o.v, statements: o.schema }])[0]!.statements;
  if (o.cseq !== 0 || e.changeset.byteLength > 0) bad(`${what}: a schema entry has cseq 0 and an empty changeset`);
  return e;
}

/** A run of log entries (a pull page, an `entries` frame): consecutive seqs. */
export function parseLogEntries(v: unknown) {
  const entries = array(v, "entries").map((e, i) => parseLogEntry(e, `entries[${i}]`));
  ascending(entries, (e) => e.seq, "entries (seq)", 1);
  return entries;
}

export function parsePullResponse(v: unknown) {
  const o = map(v, "pull response");
  return { entries: parseLogEntries(o.entries), head: nonNegativeInt(o.head, "head"), more: bool(o.more, "more") };
}

/** The `after` and `limit` query parameters of a pull, checked by the Worker before the log sees them. */
export function parsePullQuery(after: string | null | undefined, limit: string | null | undefined, maxLimit: number, defaultLimit: number) {
  const int = (s: string, what: string) => {
    if (!/^\d{1,16}$/.test(s)) bad(`${what} must be a non-negative integer`);
    return Number(s);
  };
  const a = after == null ? 0 : int(after, "after");
  const l = limit == null ? defaultLimit : int(limit, "limit");
  if (l < 1 || l > maxLimit) bad(`limit must be between 1 and ${maxLimit}`);
  return { after: a, limit: l };
}
