import { encode } from "../protocol/codec.ts";
import { FRAME, FRAME_ENTRY_BUDGET, type RelayFrame } from "../protocol/frames.ts";
import type { LogEntry } from "../protocol/messages.ts";

/**
 * What one turn of the log object sends, per socket and in log order. Runs
 * of consecutive entries are coalesced into as few `entries` frames as fit,
 * so a subscriber gets one frame for a whole batch of pushes rather than one
 * per push; acks and errors keep their place between the runs. A run that
 * several sockets share is encoded once.
 */
export class Outgoing {
  private readonly runs = new Map<WebSocket, { entries: LogEntry[]; head: number }>();
  private readonly encoded = new Map<string, Uint8Array[]>();

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
    sendBytes(ws, encode(frame));
  }

  /** Send the runs still open. */
  flush(): void {
    for (const [ws, run] of this.runs) this.send(ws, run);
    this.runs.clear();
  }

  private send(ws: WebSocket, run: { entries: LogEntry[]; head: number }): void {
    // The log never changes, so the first and last seq (and head) name a run's content.
    const key = `${run.entries[0]!.seq}:${run.entries.at(-1)!.seq}:${run.head}`;
    let frames = this.encoded.get(key);
    if (!frames) this.encoded.set(key, (frames = framesFor(run.entries, run.head).map(encode)));
    for (const f of frames) sendBytes(ws, f);
  }
}

export function send(ws: WebSocket, frame: RelayFrame): void {
  sendBytes(ws, encode(frame));
}

function sendBytes(ws: WebSocket, bytes: Uint8Array): void {
  try {
    ws.send(bytes);
  } catch {
    // A socket closing under us: its client reconnects and resumes from its cursor.
  }
}

/**
 * An entry's size in a frame: its changeset plus, at most, the msgpack of
 * its other fields (keys, three integers, the client id). Counted so that a
 * run of many small entries stays under the 1 MiB message limit too.
 */
const entryBytes = (e: LogEntry) => e.changeset.byteLength + e.client.length + 64;

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
