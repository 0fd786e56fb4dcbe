import { RelayError } from "./errors.ts";
import { MAX_ENTRIES_PER_PUSH } from "./limits.ts";
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

export type PushEntry = ReturnType<typeof parsePushEntry>;
export type PushRequest = ReturnType<typeof parsePushRequest>;
export type Ack = ReturnType<typeof parseAck>;
export type PushResponse = ReturnType<typeof parsePushResponse>;
export type LogEntry = ReturnType<typeof parseLogEntry>;
export type PullResponse = ReturnType<typeof parsePullResponse>;
export type PullQuery = ReturnType<typeof parsePullQuery>;

export interface HealthResponse {
  ok: true;
  version: string;
  protocol: { min: number; max: number };
  /** The largest changeset one entry may hold (bytes); absent from relays before 0.1.0's identity changes. */
  limits?: { maxEntryBytes: number };
}

export function parsePushEntry(v: unknown, what = "entry") {
  const o = map(v, what);
  return { cseq: positiveInt(o.cseq, `${what}.cseq`), changeset: bytes(o.changeset, `${what}.changeset`) };
}

/** Validates shape and the per-request cseq rules; changeset bytes are checked by the changeset reader. */
export function parsePushRequest(v: unknown) {
  const o = map(v, "push body");
  const client = name(o.client, "client");
  const raw = array(o.entries, "entries");
  if (raw.length === 0) bad("entries must not be empty");
  if (raw.length > MAX_ENTRIES_PER_PUSH) {
    throw new RelayError("too_many_entries", `at most ${MAX_ENTRIES_PER_PUSH} entries per push, got ${raw.length}`);
  }
  const entries = raw.map((e, i) => parsePushEntry(e, `entries[${i}]`));
  ascending(entries, (e) => e.cseq, "entries (cseq)");
  return { client, entries };
}

export function parseAck(v: unknown, what = "ack") {
  const o = map(v, what);
  return { cseq: positiveInt(o.cseq, `${what}.cseq`), seq: positiveInt(o.seq, `${what}.seq`) };
}

export function parsePushResponse(v: unknown) {
  const o = map(v, "push response");
  return { acks: parseAcks(o.acks), head: nonNegativeInt(o.head, "head") };
}

export function parseAcks(v: unknown) {
  return array(v, "acks").map((a, i) => parseAck(a, `acks[${i}]`));
}

export function parseLogEntry(v: unknown, what = "entry") {
  const o = map(v, what);
  return {
    seq: positiveInt(o.seq, `${what}.seq`),
    client: name(o.client, `${what}.client`),
    cseq: positiveInt(o.cseq, `${what}.cseq`),
    changeset: bytes(o.changeset, `${what}.changeset`),
    /** Milliseconds since the epoch when the relay appended the entry. */
    ts: nonNegativeInt(o.ts, `${what}.ts`),
  };
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
