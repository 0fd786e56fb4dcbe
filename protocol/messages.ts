import { RelayError } from "./errors.ts";
import { MAX_ENTRIES_PER_PUSH, NAME_PATTERN } from "./limits.ts";

/**
 * Protocol v1 message shapes and their validators. Every message crossing the
 * wire is decoded (codec.ts) and then validated here, on both sides: a cast
 * is not validation.
 */

export interface PushEntry {
  cseq: number;
  changeset: Uint8Array;
}
export interface PushRequest {
  client: string;
  entries: PushEntry[];
}
export interface Ack {
  cseq: number;
  seq: number;
}
export interface PushResponse {
  acks: Ack[];
  head: number;
}
export interface LogEntry {
  seq: number;
  client: string;
  cseq: number;
  changeset: Uint8Array;
  /** Milliseconds since the epoch when the relay appended the entry. */
  ts: number;
}
export interface PullResponse {
  entries: LogEntry[];
  head: number;
  more: boolean;
}
export interface HealthResponse {
  ok: true;
  version: string;
  protocol: { min: number; max: number };
}

type Obj = Record<string, unknown>;

function bad(message: string): never {
  throw new RelayError("bad_request", message);
}

function object(v: unknown, what: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) bad(`${what} must be a map`);
  return v as Obj;
}

function array(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) bad(`${what} must be an array`);
  return v;
}

export function isName(v: unknown): v is string {
  return typeof v === "string" && NAME_PATTERN.test(v);
}

export function name(v: unknown, what: string): string {
  if (!isName(v)) throw new RelayError("invalid_name", `${what} must match ${NAME_PATTERN.source}`);
  return v;
}

/** A positive safe integer (seq, cseq). */
export function positiveInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) bad(`${what} must be a positive safe integer`);
  return v;
}

function nonNegativeInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) bad(`${what} must be a non-negative safe integer`);
  return v;
}

function bytes(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) bad(`${what} must be msgpack bin`);
  return v;
}

function bool(v: unknown, what: string): boolean {
  if (typeof v !== "boolean") bad(`${what} must be a boolean`);
  return v;
}

/** Validates shape and the per-request cseq rules; changeset bytes are checked by the changeset codec. */
export function parsePushRequest(v: unknown): PushRequest {
  const o = object(v, "push body");
  const client = name(o.client, "client");
  const raw = array(o.entries, "entries");
  if (raw.length === 0) bad("entries must not be empty");
  if (raw.length > MAX_ENTRIES_PER_PUSH) {
    throw new RelayError("too_many_entries", `at most ${MAX_ENTRIES_PER_PUSH} entries per push, got ${raw.length}`);
  }
  let last = 0;
  const entries = raw.map((e, i): PushEntry => {
    const eo = object(e, `entries[${i}]`);
    const cseq = positiveInt(eo.cseq, `entries[${i}].cseq`);
    if (cseq <= last) bad(`entries[${i}].cseq must be greater than the previous entry's`);
    last = cseq;
    return { cseq, changeset: bytes(eo.changeset, `entries[${i}].changeset`) };
  });
  return { client, entries };
}

export function parsePushResponse(v: unknown): PushResponse {
  const o = object(v, "push response");
  const acks = array(o.acks, "acks").map((a, i) => {
    const ao = object(a, `acks[${i}]`);
    return { cseq: positiveInt(ao.cseq, "ack cseq"), seq: positiveInt(ao.seq, "ack seq") };
  });
  return { acks, head: nonNegativeInt(o.head, "head") };
}

export function parseLogEntry(v: unknown, what = "entry"): LogEntry {
  const o = object(v, what);
  return {
    seq: positiveInt(o.seq, `${what}.seq`),
    client: name(o.client, `${what}.client`),
    cseq: positiveInt(o.cseq, `${what}.cseq`),
    changeset: bytes(o.changeset, `${what}.changeset`),
    ts: nonNegativeInt(o.ts, `${what}.ts`),
  };
}

export function parsePullResponse(v: unknown): PullResponse {
  const o = object(v, "pull response");
  const entries = array(o.entries, "entries").map((e, i) => parseLogEntry(e, `entries[${i}]`));
  for (let i = 1; i < entries.length; i++) {
    if (entries[i]!.seq !== entries[i - 1]!.seq + 1) bad("pulled entries must be consecutive");
  }
  return { entries, head: nonNegativeInt(o.head, "head"), more: bool(o.more, "more") };
}

/** `after` and `limit` query parameters of a pull. */
export function parsePullQuery(after: string | undefined, limit: string | undefined, maxLimit: number, defaultLimit: number) {
  const int = (s: string, what: string) => {
    if (!/^\d{1,16}$/.test(s)) bad(`${what} must be a non-negative integer`);
    return Number(s);
  };
  const a = after === undefined ? 0 : int(after, "after");
  const l = limit === undefined ? defaultLimit : int(limit, "limit");
  if (l < 1 || l > maxLimit) bad(`limit must be between 1 and ${maxLimit}`);
  return { after: a, limit: l };
}
