import { isWireErrorCode, RelayError, type WireErrorCode } from "./errors.ts";
import { parseAcks, parseLogEntries, parsePushRequest, type Ack, type LogEntry, type PushEntry } from "./messages.ts";
import { map, nonNegativeInt, positiveInt } from "./validate.ts";

/**
 * WebSocket frames of protocol v1 (`GET /v1/db/:db/ws`). Binary frames are
 * msgpack maps tagged by `t`; the heartbeat is the text frame "ping",
 * answered "pong" by the runtime without waking the Durable Object.
 *
 *   client → relay   sub    { t, after }            start live delivery after seq `after`
 *                    push   { t, id, client, entries }   same rules as HTTP push
 *                    got    { t, bytes }             binary frame bytes read from this socket so
 *                                                    far (flow control: MAX_UNREAD_SOCKET_BYTES)
 *   relay → client   entries { t, entries, head }   consecutive log entries (live, or the
 *                                                    small backlog right after `sub`)
 *                    head   { t, head }              there is more than was sent: pull over HTTP
 *                    ack    { t, id, acks, head }
 *                    error  { t, id?, error: { code, message }, retryAfterMs? }
 *                    snapshot { t, seq, build }     (v2) if you are at `seq` with nothing pending:
 *                                                    build a snapshot and upload it (`build`), or
 *                                                    report your state's hash at `seq`
 *
 * The socket never carries the whole log: a subscriber further behind than one
 * frame, or an entry larger than a frame, gets a `head` frame and catches up
 * with paged HTTP pulls. Entries pushed over a socket are not sent back on
 * that socket: its `ack` (cseq → seq) stands for them, and the pusher
 * already holds their bytes.
 *
 * The frame unions below are the declared return types of their validators,
 * which build every frame as a literal: the compiler checks each against its
 * type both ways (a missing field and an extra one are errors).
 */
export const FRAME = {
  sub: "sub",
  push: "push",
  entries: "entries",
  head: "head",
  ack: "ack",
  error: "error",
  snapshot: "snapshot",
  got: "got",
} as const;

export const HEARTBEAT_PING = "ping";
export const HEARTBEAT_PONG = "pong";

/** Largest frame either side sends or accepts (Workers cap WebSocket messages at 1 MiB). */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Changeset bytes per relay → client frame, leaving room for the envelope. */
export const FRAME_ENTRY_BUDGET = 768 * 1024;

/**
 * WebSocket close codes the relay sends; details travel in an error frame
 * first. A refused push (overloaded included) is an answer, not a close.
 */
export const CLOSE = {
  normal: 1000,
  /** A frame that is not a protocol message: the peer does not speak v1. */
  badPayload: 1007,
  /** The socket's token expired (an `unauthorized` error frame comes first): reconnect with a fresh one. */
  expired: 1008,
  tooBig: 1009,
  internal: 1011,
  /** The client stopped reading: far more was sent than it reported reading (see MAX_UNREAD_SOCKET_BYTES). */
  tryAgainLater: 1013,
} as const;

export type ClientFrame =
  | { t: typeof FRAME.sub; after: number }
  | { t: typeof FRAME.push; id: number; client: string; entries: PushEntry[] }
  | { t: typeof FRAME.got; bytes: number };

export type RelayFrame =
  | { t: typeof FRAME.entries; entries: LogEntry[]; head: number }
  | { t: typeof FRAME.head; head: number }
  | { t: typeof FRAME.ack; id: number; acks: Ack[]; head: number }
  | { t: typeof FRAME.error; id?: number; error: { code: WireErrorCode; message: string }; retryAfterMs?: number }
  | { t: typeof FRAME.snapshot; seq: number; build: boolean };

function frame(v: unknown): Record<string, unknown> {
  return map(v, "frame");
}

function unknownType(t: unknown): never {
  throw new RelayError("bad_request", `unknown frame type ${JSON.stringify(t)}`);
}

export function parseClientFrame(v: unknown): ClientFrame {
  const o = frame(v);
  switch (o.t) {
    case FRAME.sub:
      return { t: FRAME.sub, after: nonNegativeInt(o.after, "after") };
    case FRAME.push: {
      const { client, schema, entries } = parsePushRequest(o);
      // Schema versions are rare and run DDL on the relay: HTTP only, which keeps socket pushes one shape.
      if (schema.length > 0) throw new RelayError("bad_request", "schema versions are pushed over HTTP, not the socket");
      return { t: FRAME.push, id: positiveInt(o.id, "id"), client, entries };
    }
    case FRAME.got:
      return { t: FRAME.got, bytes: nonNegativeInt(o.bytes, "bytes") };
    default:
      return unknownType(o.t);
  }
}

export function parseRelayFrame(v: unknown): RelayFrame {
  const o = frame(v);
  switch (o.t) {
    case FRAME.entries:
      return { t: FRAME.entries, entries: parseLogEntries(o.entries), head: nonNegativeInt(o.head, "head") };
    case FRAME.head:
      return { t: FRAME.head, head: nonNegativeInt(o.head, "head") };
    case FRAME.ack:
      return { t: FRAME.ack, id: positiveInt(o.id, "id"), acks: parseAcks(o.acks), head: nonNegativeInt(o.head, "head") };
    case FRAME.error: {
      const err = map(o.error, "error");
      // A code from a newer relay is still an error: `internal` keeps it retryable.
      const code = isWireErrorCode(err.code) ? err.code : "internal";
      const f: RelayFrame = { t: FRAME.error, error: { code, message: String(err.message ?? "") } };
      if (o.id !== undefined) f.id = positiveInt(o.id, "id");
      if (o.retryAfterMs !== undefined) f.retryAfterMs = nonNegativeInt(o.retryAfterMs, "retryAfterMs");
      return f;
    }
    case FRAME.snapshot:
      return { t: FRAME.snapshot, seq: nonNegativeInt(o.seq, "seq"), build: o.build === true };
    default:
      return unknownType(o.t);
  }
}
