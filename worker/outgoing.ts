import { encode } from "../protocol/codec.ts";
import { CLOSE, FRAME, FRAME_ENTRY_BUDGET, type RelayFrame } from "../protocol/frames.ts";
import { MAX_UNREAD_SOCKET_BYTES } from "../protocol/limits.ts";
import type { LogEntry } from "../protocol/messages.ts";

/**
 * A socket's flow-control state, kept in its attachment so it survives
 * hibernation: bytes sent, bytes its client reported reading (`got`), and
 * whether entries are being skipped because it fell behind.
 */
export interface Flow {
  sent: number;
  got: number;
  behind: boolean;
}

export const NEW_FLOW: Flow = { sent: 0, got: 0, behind: false };

/**
 * What one turn of the log object sends, per socket and in log order. Runs
 * of consecutive entries are coalesced into as few `entries` frames as fit,
 * so a subscriber gets one frame for a whole batch of pushes rather than one
 * per push; acks and errors keep their place between the runs. A run that
 * several sockets share is encoded once.
 *
 * Every byte sent is counted against the socket's Flow: a run that would
 * leave more than MAX_UNREAD_SOCKET_BYTES unread becomes one `head` frame and
 * the socket is skipped until its client reports reading (it pulls the rest
 * over HTTP meanwhile), so a subscriber that stops reading costs the relay
 * at most that much. Answers (acks, errors) are always sent; a socket whose
 * answers alone pass twice the bound is closed with 1013.
 */
export class Outgoing {
  private readonly runs = new Map<WebSocket, { entries: LogEntry[]; head: number }>();
  private readonly encoded = new Map<string, Uint8Array[]>();
  /** Attachments read this turn, written back by flush(). */
  private readonly flows = new Map<WebSocket, Flow>();

  entries(ws: WebSocket, entries: readonly LogEntry[], head: number): void {
    if (entries.length === 0) return;
    const run = this.runs.get(ws);
    if (run && run.entries.at(-1)!.seq + 1 === entries[0]!.seq) {
      for (const e of entries) run.entries.push(e);
      run.head = head;
      return;
    }
    if (run) this.send(ws, run);
    this.runs.set(ws, { entries: [...entries], head });
  }

  /** A frame that must follow everything queued for `ws` so far (an ack, an error). */
  frame(ws: WebSocket, frame: RelayFrame): void {
    const run = this.runs.get(ws);
    if (run) {
      this.runs.delete(ws);
      this.send(ws, run);
    }
    this.write(ws, encode(frame));
  }

  /** Send the runs still open, and keep each socket's counts. */
  flush(): void {
    for (const [ws, run] of this.runs) this.send(ws, run);
    this.runs.clear();
    for (const [ws, flow] of this.flows) {
      try {
        ws.serializeAttachment({ ...ws.deserializeAttachment(), ...flow });
      } catch {
        // closed meanwhile
      }
    }
    this.flows.clear();
  }

  private send(ws: WebSocket, run: { entries: LogEntry[]; head: number }): void {
    const flow = this.flow(ws);
    if (flow.behind) return; // it has a head frame to act on
    // The log never changes, so the first and last seq (and head) name a run's content.
    const key = `${run.entries[0]!.seq}:${run.entries.at(-1)!.seq}:${run.head}`;
    let frames = this.encoded.get(key);
    if (!frames) this.encoded.set(key, (frames = framesFor(run.entries, run.head).map(encode)));
    const bytes = frames.reduce((n, f) => n + f.byteLength, 0);
    if (flow.sent - flow.got + bytes > MAX_UNREAD_SOCKET_BYTES) {
      flow.behind = true;
      return this.write(ws, encode({ t: FRAME.head, head: run.head }));
    }
    for (const f of frames) this.write(ws, f);
  }

  private write(ws: WebSocket, bytes: Uint8Array): void {
    const flow = this.flow(ws);
    flow.sent += bytes.byteLength;
    sendBytes(ws, bytes);
    if (flow.sent - flow.got > 2 * MAX_UNREAD_SOCKET_BYTES) close(ws);
  }

  private flow(ws: WebSocket): Flow {
    let flow = this.flows.get(ws);
    if (!flow) {
      const { sent, got, behind } = { ...NEW_FLOW, ...(ws.deserializeAttachment() as Partial<Flow> | null) };
      this.flows.set(ws, (flow = { sent, got, behind }));
    }
    return flow;
  }
}

/** One frame on its own (a reply to a client's frame), counted like any other. */
export function send(ws: WebSocket, frame: RelayFrame): void {
  const out = new Outgoing();
  out.frame(ws, frame);
  out.flush();
}

/**
 * A `got` frame: the client has read `bytes` of what this socket sent (never
 * more than was sent). Once it is back within half the bound, entries flow
 * again; it sees a gap in seq and pulls what it missed.
 */
export function noteGot(ws: WebSocket, bytes: number): void {
  const info = ws.deserializeAttachment() as Flow;
  const got = Math.min(info.sent, Math.max(info.got, bytes));
  const behind = info.behind && info.sent - got > MAX_UNREAD_SOCKET_BYTES / 2;
  ws.serializeAttachment({ ...info, got, behind });
}

function sendBytes(ws: WebSocket, bytes: Uint8Array): void {
  try {
    ws.send(bytes);
  } catch {
    // A socket closing under us: its client reconnects and resumes from its cursor.
  }
}

function close(ws: WebSocket): void {
  try {
    ws.close(CLOSE.tryAgainLater, "too much unread data");
  } catch {
    // already closing
  }
}

/**
 * An entry's size in a frame: its changeset (a schema entry: its statements,
 * up to 3 bytes a UTF-16 unit in UTF-8, 5 of string header each) plus, at
 * most, the msgpack of its other fields (keys, four integers, the client id).
 * Counted so that a run of many small entries stays under the 1 MiB message
 * limit too.
 */
const entryBytes = (e: LogEntry) => (e.size ?? e.changeset.byteLength) + e.client.length + 64 + (e.schema?.reduce((n, s) => n + 3 * s.length + 5, 0) ?? 0);

/**
 * Consecutive entries packed into frames under the byte budget. An entry too
 * large for any frame ends the run with a `head` frame: the client fetches the
 * rest over HTTP.
 */
export function framesFor(entries: readonly LogEntry[], head: number): RelayFrame[] {
  const frames: RelayFrame[] = [];
  let batch: LogEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    const size = entryBytes(e);
    if (size > FRAME_ENTRY_BUDGET) {
      if (batch.length > 0) frames.push({ t: FRAME.entries, entries: batch, head });
      frames.push({ t: FRAME.head, head });
      return frames;
    }
    if (bytes + size > FRAME_ENTRY_BUDGET) {
      frames.push({ t: FRAME.entries, entries: batch, head });
      batch = [];
      bytes = 0;
    }
    batch.push(e);
    bytes += size;
  }
  if (batch.length > 0) frames.push({ t: FRAME.entries, entries: batch, head });
  return frames;
}
