/**
 * W2's latency path, stage by stage (`--w2-stages`): the replicas' WebSockets
 * are wrapped (the public `createWebSocket` option) so every frame A sends and
 * every frame A and B receive is timestamped on the shared CLOCK_MONOTONIC as
 * it crosses the socket, before the replica sees it. With A's exec() start and
 * resolve times and B's "change" events, each update k gets:
 *
 *   exec start ─write─▶ frame sent ─relay─▶ frame at B ─B─▶ "change" on B
 *                         └──────ack─────▶ ack at A
 *
 * "relay" is the network both ways plus the Durable Object (its queue turn,
 * the storage commit and output gate, the fan-out); "B" is B's wait for its
 * lock plus the sync step. Frames are copied and decoded after the run.
 */
import { decode } from "../protocol/codec.ts";
import type { WebSocketLike } from "../client/transport/socket.ts";
import { percentile } from "./stats.ts";

export const now = (): number => Number(process.hrtime.bigint()) / 1e6;

/** [time, bytes] of every binary frame, in order. */
export interface FrameLog {
  sent: [number, Uint8Array][];
  got: [number, Uint8Array][];
}

export function tracedWebSocket(log: FrameLog): (url: string) => WebSocketLike {
  return (url) => {
    const ws = new WebSocket(url);
    const traced: WebSocketLike = {
      get binaryType() {
        return ws.binaryType;
      },
      set binaryType(t: string) {
        ws.binaryType = t as BinaryType;
      },
      get readyState() {
        return ws.readyState;
      },
      send(data) {
        // The encoder may hand out a view of a reused buffer: copied.
        if (typeof data !== "string") log.sent.push([now(), data.slice()]);
        ws.send(data as string | Uint8Array<ArrayBuffer>);
      },
      close: (code, reason) => ws.close(code, reason),
      onopen: null,
      onmessage: null,
      onclose: null,
      onerror: null,
    };
    ws.onopen = (e) => traced.onopen?.(e);
    ws.onclose = (e) => traced.onclose?.(e);
    ws.onerror = (e) => traced.onerror?.(e);
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") log.got.push([now(), new Uint8Array(e.data as ArrayBuffer)]);
      traced.onmessage?.(e);
    };
    return traced;
  };
}

type Frame = { t: string; entries?: { cseq: number; seq?: number }[]; acks?: { cseq: number; seq: number }[] };

/** [key, time] pairs: the first time each key was seen in frames of type `t` (run after the run). */
function firstSeen(frames: [number, Uint8Array][], t: string, keys: (f: Frame) => number[]): number[] {
  const at = new Map<number, number>();
  for (const [time, bytes] of frames) {
    const f = decode(bytes) as Frame;
    if (f.t !== t) continue;
    for (const k of keys(f)) if (!at.has(k)) at.set(k, time);
  }
  return [...at].flat();
}

/** What a writer's frames say: when each cseq went out, and when its ack came back. */
export function writerTimes(log: FrameLog) {
  return {
    frames: log.sent.length,
    sent: firstSeen(log.sent, "push", (f) => f.entries!.map((e) => e.cseq)),
    acked: firstSeen(log.got, "ack", (f) => f.acks!.map((a) => a.cseq)),
  };
}

/** What a reader's frames say: when each seq arrived. */
export function readerTimes(log: FrameLog) {
  return { frames: log.got.length, arrived: firstSeen(log.got, "entries", (f) => f.entries!.map((e) => e.seq!)) };
}

export interface StageInput {
  /** Update k is A's cseq cseq0 + k and the log's seq seq0 + k. */
  cseq0: number;
  seq0: number;
  n: number;
  execStart: number[];
  resolved: number[];
  a: ReturnType<typeof writerTimes>;
  b: ReturnType<typeof readerTimes>;
  /** [cursor, time] pairs of B's remote "change" events. */
  events: number[];
}

const toMap = (pairs: number[]) => new Map(Array.from({ length: pairs.length / 2 }, (_, i) => [pairs[2 * i]!, pairs[2 * i + 1]!]));

/**
 * Each stage's p50 / p99 / max over the updates (ms): `write` exec start →
 * resolved, `sent` exec start → its frame sent (the write plus any wait to
 * share a frame), `relay` sent → arrived at B, `b` arrived → "change" on B,
 * `ack` sent → ack at A, `total` exec start → "change", `measured` what the
 * W2 table reports (resolved → "change").
 */
export function stages(s: StageInput): Record<string, number> {
  const sent = toMap(s.a.sent);
  const acked = toMap(s.a.acked);
  const atB = toMap(s.b.arrived);
  const cols: Record<string, number[]> = { write: [], sent: [], relay: [], b: [], ack: [], total: [], measured: [] };
  let e = 0;
  for (let k = 1; k <= s.n; k++) {
    const t0 = s.execStart[k]!;
    const tSent = sent.get(s.cseq0 + k);
    const tB = atB.get(s.seq0 + k);
    while (e < s.events.length && s.events[e]! < s.seq0 + k) e += 2;
    const tChange = s.events[e + 1];
    if (tSent === undefined || tB === undefined || tChange === undefined) continue;
    cols.write!.push(s.resolved[k]! - t0);
    cols.sent!.push(tSent - t0);
    cols.relay!.push(tB - tSent);
    cols.b!.push(tChange - tB);
    const tAck = acked.get(s.cseq0 + k);
    if (tAck !== undefined) cols.ack!.push(tAck - tSent);
    cols.total!.push(tChange - t0);
    cols.measured!.push(tChange - s.resolved[k]!);
  }
  // Mean exec() time, and mean time between one exec() resolving and the next starting (the writer's loop is otherwise empty).
  const loop = s.resolved[s.n]! - s.execStart[1]!;
  const writeMean = cols.write!.reduce((a, b) => a + b, 0) / cols.write!.length;
  const out: Record<string, number> = { pushFrames: s.a.frames, bFrames: s.b.frames, traced: cols.total!.length, writeMean, gapMean: loop / s.n - writeMean };
  for (const [name, xs] of Object.entries(cols)) {
    if (xs.length === 0) continue;
    out[`${name}P50`] = percentile(xs, 50);
    out[`${name}P99`] = percentile(xs, 99);
    out[`${name}Max`] = Math.max(...xs);
  }
  return out;
}
