import { RelayError, isErrorCode, type ErrorCode } from "./errors.ts";
import { parseLogEntry, parsePushRequest, positiveInt, type Ack, type LogEntry, type PushEntry } from "./messages.ts";

/**
 * WebSocket frames of protocol v1 (`GET /v1/db/:db/ws`). Binary frames are
 * msgpack maps tagged by `t`; the heartbeat is the text frame "ping",
 * answered "pong" by the runtime without waking the Durable Object.
 *
 *   client → relay   sub    { t, after }            start live delivery after seq `after`
 *                    push   { t, id, client, entries }   same rules as HTTP push
 *   relay → client   entries { t, entries, head }   consecutive log entries (live, or the
 *                                                    small backlog right after `sub`)
 *                    head   { t, head }              there is more than was sent: pull over HTTP
 *                    ack    { t, id, acks, head }
 *                    error  { t, id?, error: { code, message } }
 *
 * The socket never carries the whole log: a subscriber further behind than one
 * frame, or an entry larger than a frame, gets a `head` frame and catches up
 * with paged HTTP pulls. Entries pushed over a socket are not sent back on
 * that socket: its `ack` (cseq → seq) stands for them, and the pusher
 * already holds their bytes.
 */
export const FRAME = {
  sub: "sub",
  push: "push",
  entries: "entries",
  head: "head",
  ack: "ack",
  error: "error",
} as const;

export const HEARTBEAT_PING = "ping";
export const HEARTBEAT_PONG = "pong";

/** Largest frame either side sends or accepts (Workers cap WebSocket messages at 1 MiB). */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Changeset bytes per relay → client frame, leaving room for the envelope. */
export const FRAME_ENTRY_BUDGET = 768 * 1024;

/** WebSocket close codes, used consistently; details travel in an error frame first. */
export const CLOSE = {
  normal: 1000,
  badPayload: 1007,
  policy: 1008,
  tooBig: 1009,
  internal: 1011,
  tryAgainLater: 1013,
} as const;

export type ClientFrame =
  | { t: typeof FRAME.sub; after: number }
  | { t: typeof FRAME.push; id: number; client: string; entries: PushEntry[] };

export type RelayFrame =
  | { t: typeof FRAME.entries; entries: LogEntry[]; head: number }
  | { t: typeof FRAME.head; head: number }
  | { t: typeof FRAME.ack; id: number; acks: Ack[]; head: number }
  | { t: typeof FRAME.error; id?: number; error: { code: ErrorCode; message: string } };

function map(v: unknown): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) {
    throw new RelayError("bad_request", "frame must be a msgpack map");
  }
  return v as Record<string, unknown>;
}

function seqOrZero(v: unknown, what: string): number {
  return v === 0 ? 0 : positiveInt(v, what);
}

export function parseClientFrame(v: unknown): ClientFrame {
  const o = map(v);
  switch (o.t) {
    case FRAME.sub:
      return { t: FRAME.sub, after: seqOrZero(o.after, "after") };
    case FRAME.push: {
      const { client, entries } = parsePushRequest(o);
      return { t: FRAME.push, id: positiveInt(o.id, "id"), client, entries };
    }
    default:
      throw new RelayError("bad_request", `unknown frame type ${JSON.stringify(o.t)}`);
  }
}

export function parseRelayFrame(v: unknown): RelayFrame {
  const o = map(v);
  switch (o.t) {
    case FRAME.entries: {
      if (!Array.isArray(o.entries)) throw new RelayError("bad_request", "entries must be an array");
      const entries = o.entries.map((e, i) => parseLogEntry(e, `entries[${i}]`));
      for (let i = 1; i < entries.length; i++) {
        if (entries[i]!.seq !== entries[i - 1]!.seq + 1) throw new RelayError("bad_request", "frame entries must be consecutive");
      }
      return { t: FRAME.entries, entries, head: seqOrZero(o.head, "head") };
    }
    case FRAME.head:
      return { t: FRAME.head, head: seqOrZero(o.head, "head") };
    case FRAME.ack: {
      if (!Array.isArray(o.acks)) throw new RelayError("bad_request", "acks must be an array");
      const acks = o.acks.map((a) => {
        const ao = map(a);
        return { cseq: positiveInt(ao.cseq, "ack cseq"), seq: positiveInt(ao.seq, "ack seq") };
      });
      return { t: FRAME.ack, id: positiveInt(o.id, "id"), acks, head: seqOrZero(o.head, "head") };
    }
    case FRAME.error: {
      const err = map(o.error);
      const code = isErrorCode(err.code) ? err.code : "internal";
      const frame: RelayFrame = { t: FRAME.error, error: { code, message: String(err.message ?? "") } };
      if (o.id !== undefined) frame.id = positiveInt(o.id, "id");
      return frame;
    }
    default:
      throw new RelayError("bad_request", `unknown frame type ${JSON.stringify(o.t)}`);
  }
}
