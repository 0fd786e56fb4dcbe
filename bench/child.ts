/**
 * One bench process on the client side. The orchestrator (run.ts) forks it
 * per job so each run starts with a clean heap and its peak RSS belongs to
 * that job alone; replicas A and B of a workload are separate processes, as
 * they would be separate devices. Clocks: process.hrtime is CLOCK_MONOTONIC,
 * shared by every process on the machine, so timestamps from two children
 * compare directly.
 */
import { DatabaseSync } from "node:sqlite";
import { openReplica, type Replica } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import type { TableHeader } from "../protocol/changeset.ts";
import { encodeChangeset } from "../client/changeset-writer.ts";
import { decode, encode } from "../protocol/codec.ts";
import { FRAME, parseRelayFrame } from "../protocol/frames.ts";
import { httpTransport } from "../client/transport/http.ts";
import { socketUrl } from "../client/transport/socket.ts";
import { INSERT_TODO, TODOS_SCHEMA, UPDATE_TODO, W2_POINT_WATCHES, pushW1, w1Row, w2Update, type W2Watch } from "./rows.ts";
import { installWireMeter, wireBytes, wireSince, type WireBytes } from "./wire.ts";
import { schedMs, selfPeakRss } from "./proc.ts";
import { readerTimes, tracedWebSocket, writerTimes, type FrameLog } from "./stages.ts";

export const now = (): number => Number(process.hrtime.bigint()) / 1e6;

export type Job =
  | { kind: "limit"; n: number }
  | { kind: "w1-write"; url: string; db: string; token: string; driver: DriverKind; n: number }
  | { kind: "catch-up"; url: string; db: string; token: string; driver: DriverKind; rows: number }
  | { kind: "w2-writer"; url: string; db: string; token: string; driver: DriverKind; n: number; stages?: boolean; rate?: number }
  | { kind: "w2-reader"; url: string; db: string; token: string; driver: DriverKind; target: number; watch?: W2Watch; n?: number; stages?: boolean }
  | { kind: "w3"; url: string; db: string; tokens: string[]; ms: number; mode: "batched" | "single"; rate: number }
  | { kind: "w4-seed"; url: string; db: string; token: string; entries: number };

/** What every job reports besides its own figures. */
export interface Common {
  peakRss: number;
  cpuMs: number;
}

const cpu0 = process.cpuUsage();
function common(): Common {
  const c = process.cpuUsage(cpu0);
  return { peakRss: selfPeakRss(), cpuMs: (c.user + c.system) / 1000 };
}

function nextMessage(): Promise<unknown> {
  return new Promise((resolve) => process.once("message", resolve));
}

function reply(m: unknown): Promise<void> {
  return new Promise((resolve, reject) => process.send!(m, undefined, {}, (e) => (e ? reject(e) : resolve())));
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * The physical limit: the same rows captured and applied in-process with
 * node:sqlite (createSession, changeset, applyChangeset), no network, no
 * outbox, no validation. Timed from BEGIN to the end of the apply.
 */
function limit(n: number) {
  const a = new DatabaseSync(":memory:");
  const b = new DatabaseSync(":memory:");
  a.exec(TODOS_SCHEMA);
  b.exec(TODOS_SCHEMA);
  const insert = a.prepare(INSERT_TODO);
  const t0 = now();
  const session = a.createSession();
  a.exec("BEGIN");
  for (let i = 1; i <= n; i++) insert.run(...w1Row(i));
  a.exec("COMMIT");
  const changeset = session.changeset();
  const t1 = now();
  b.applyChangeset(changeset);
  const t2 = now();
  const rows = (b.prepare("SELECT count(*) AS c FROM todos").get() as { c: number }).c;
  if (rows !== n) throw new Error(`limit: applied ${rows} rows, expected ${n}`);
  return { captureMs: t1 - t0, applyMs: t2 - t1, totalMs: t2 - t0, changesetBytes: changeset.byteLength };
}

function open(job: { url: string; db: string; token: string; driver: DriverKind }, live = false, frames?: FrameLog): Promise<Replica> {
  return openReplica({ url: job.url, db: job.db, token: job.token, driver: job.driver, schema: [TODOS_SCHEMA], live, ...(frames ? { createWebSocket: tracedWebSocket(frames) } : {}) });
}

/** The frames of a W2 replica's socket, when its stages are traced (stages.ts). */
const frameLog = (on: boolean | undefined): FrameLog | undefined => (on ? { sent: [], got: [] } : undefined);

async function count(r: Replica): Promise<number> {
  return (await r.query<{ c: number }>("SELECT count(*) AS c FROM todos"))[0]!.c;
}

/** W1, replica A: N rows in one transaction, then push. */
async function w1Write(job: Extract<Job, { kind: "w1-write" }>) {
  const a = await open(job);
  const t0 = now();
  await a.transaction(async (tx) => {
    for (let i = 1; i <= job.n; i++) await tx.exec(INSERT_TODO, w1Row(i));
  });
  const t1 = now();
  const w = wireBytes();
  const error = await pushW1(a);
  const t2 = now();
  const wire = wireSince(w);
  const pendingAfter = a.status().pending;
  await a.close();
  return { writeMs: t1 - t0, pushMs: t2 - t1, wire, pendingAfter, ...(error ? { error } : {}) };
}

/** W1 replica B and W4: a fresh replica syncs until it has the whole log. */
async function catchUp(job: Extract<Job, { kind: "catch-up" }>) {
  const b = await open(job);
  const w = wireBytes();
  const t0 = now();
  let ev = await b.sync();
  while (ev.cursor < ev.head) ev = await b.sync();
  const t1 = now();
  const wire = wireSince(w);
  const rows = await count(b);
  if (rows !== job.rows) throw new Error(`catch-up: ${rows} rows, expected ${job.rows}`);
  await b.close();
  return { syncMs: t1 - t0, wire, entries: ev.cursor };
}

/**
 * Paced W2 (`--w2-rate`): wait for update k's due time, or at least yield to
 * the event loop, as an app writing in response to events does (a loop of
 * awaited exec() calls alone never yields: node:sqlite is synchronous).
 */
async function pace(due: number): Promise<void> {
  const ahead = due - now();
  await new Promise((r) => (ahead >= 1 ? setTimeout(r, ahead) : setImmediate(r)));
}

/**
 * W2, replica A: holds the W1 rows (1..n), synced; then, on "go", n
 * single-row updates, each its own transaction, live. Records when each
 * exec() resolved.
 */
async function w2Writer(job: Extract<Job, { kind: "w2-writer" }>) {
  const frames = frameLog(job.stages);
  const a = await open(job, true, frames);
  await a.transaction(async (tx) => {
    for (let i = 1; i <= job.n; i++) await tx.exec(INSERT_TODO, w1Row(i));
  });
  await a.sync();
  await until(() => a.status().pending === 0 && a.status().connected, "A seeded and connected");
  const seedHead = a.status().cursor;
  await reply({ stage: "seeded", seedHead });
  await nextMessage(); // go
  if (frames) frames.sent.length = frames.got.length = 0;
  const sched0 = schedMs([process.pid], true);
  const w = wireBytes();
  const resolved = new Float64Array(job.n + 1);
  const execStart = new Float64Array(job.n + 1);
  const start = now();
  for (let k = 1; k <= job.n; k++) {
    if (job.rate) await pace(start + ((k - 1) * 1000) / job.rate);
    execStart[k] = now();
    await a.exec(UPDATE_TODO, w2Update(k));
    resolved[k] = now();
  }
  const execEnd = now();
  await until(() => a.status().pending === 0, "A's updates confirmed");
  const confirmed = now();
  const sched = schedMs([process.pid], true);
  const wire = wireSince(w);
  await a.close();
  const traced = frames && { ...writerTimes(frames), execStart: Array.from(execStart), runCpuMs: sched.cpu - sched0.cpu, runWaitMs: sched.wait - sched0.wait };
  return { start, execEnd, confirmed, resolved: Array.from(resolved), wire, ...(traced ? { traced } : {}) };
}

/** W2, replica B: live, already holding the seed; records every remote "change" event (cursor, time), and what its watches saw. */
async function w2Reader(job: Extract<Job, { kind: "w2-reader" }>) {
  const unrelated = Array.from({ length: 10 }, (_, t) => `CREATE TABLE IF NOT EXISTS other${t}(id INTEGER PRIMARY KEY, v TEXT)`);
  const frames = frameLog(job.stages);
  const b = job.watch === "unrelated" ? await openReplica({ url: job.url, db: job.db, token: job.token, driver: job.driver, migrations: [[TODOS_SCHEMA], unrelated], live: true }) : await open(job, true, frames);
  await b.sync();
  await until(() => b.status().connected, "B connected");
  const events: number[] = [];
  let last = 0;
  b.on("change", (e) => {
    if (e.source !== "remote") return;
    events.push(e.cursor, now());
    last = e.cursor;
  });
  // Update k, seen by the watch of row k: [k, time] pairs.
  const seen: number[] = [];
  const watched = new Set<number>();
  if (job.watch === "point") {
    for (let j = 1; j <= W2_POINT_WATCHES; j++) {
      const k = Math.round((j * job.n!) / W2_POINT_WATCHES);
      watched.add(k);
      const [, updatedAt] = w2Update(k);
      b.watch<{ updated_at: number }>("SELECT * FROM todos WHERE id = ?", [k], (rows) => {
        if (rows[0]?.updated_at === updatedAt) seen.push(k, now());
      });
    }
  } else if (job.watch === "unrelated") {
    for (let i = 0; i < 100; i++) b.watch(`SELECT * FROM other${i % 10} WHERE id = ?`, [i], () => {});
  }
  await b.query("SELECT 1"); // the watches' first runs are done
  const w = wireBytes();
  const cpu = process.cpuUsage();
  if (frames) frames.sent.length = frames.got.length = 0;
  const sched0 = schedMs([process.pid], true);
  await reply({ stage: "ready", cursor: b.status().cursor });
  await until(() => last >= job.target && seen.length === 2 * watched.size, "B to receive every update", 600_000);
  const c = process.cpuUsage(cpu);
  const sched = schedMs([process.pid], true);
  const wire = wireSince(w);
  await b.close();
  // B's CPU while the updates arrive (not opening, not the watches' first runs).
  return { events, seen, wire, runCpuMs: (c.user + c.system) / 1000, ...(frames ? { traced: { ...readerTimes(frames), runWaitMs: sched.wait - sched0.wait } } : {}) };
}

const TODOS: TableHeader = { name: "todos", pk: [true, false, false, false] };

/** A single-row INSERT changeset exactly as the session extension writes it (the codec is byte-identical to SQLite's). */
function insertChangeset(id: number): Uint8Array {
  const [, title, done, updatedAt] = w1Row(id);
  return encodeChangeset({ tables: [TODOS], changes: [{ table: TODOS, op: "insert", indirect: false, old: undefined, new: [id, title, done, updatedAt] }] });
}

/**
 * W3 fan-in: 20 writers, each its own WebSocket and client id, push to one
 * database for `ms`. "batched": each writer's app commits `rate` single-row
 * transactions per second, and the writer keeps one push in flight carrying
 * everything committed since the last one (what the replica's outbox flush
 * does, at most 1000 entries). "single": one entry per push, one push in
 * flight per writer, as fast as acks return. Afterwards the whole log is
 * pulled and checked: gapless, every acknowledged entry present once.
 */
async function w3(job: Extract<Job, { kind: "w3" }>) {
  const writers = job.tokens.map((token, w) => ({
    id: `w3-${w}`,
    ws: new WebSocket(socketUrl(job.url, job.db, token)),
    sent: 0,
    acked: 0,
    ackedInWindow: 0,
    pushes: 0,
    inflight: false,
    frameId: 0,
    sentAt: 0,
    rtts: [] as number[],
    refused: 0,
  }));
  await Promise.all(writers.map((w) => new Promise((res, rej) => ((w.ws.binaryType = "arraybuffer"), (w.ws.onopen = res), (w.ws.onerror = rej)))));
  // Pre-built so the client's CPU goes to pushing, not to building changesets.
  const perWriter = job.mode === "batched" ? Math.ceil((job.rate * job.ms) / 1000) + 1000 : 200_000;
  const base = (w: number) => (w + 1) * 10_000_000;
  const cache = new Map<number, Uint8Array>();
  const changeset = (w: number, i: number) => {
    const id = base(w) + i;
    let c = cache.get(id);
    if (!c) cache.set(id, (c = insertChangeset(id)));
    return c;
  };
  let stopped = false;
  const t0 = now();
  const end = t0 + job.ms;
  const committed = (t: number) => (job.mode === "batched" ? Math.min(perWriter, Math.floor(((t - t0) * job.rate) / 1000)) : Infinity);
  const done = new Promise<void>((resolveAll) => {
    let open = writers.length;
    writers.forEach((w, wi) => {
      const pump = () => {
        if (w.inflight) return;
        if (stopped) {
          if (--open === 0) resolveAll();
          return;
        }
        const t = now();
        const upTo = Math.min(committed(t), w.sent + (job.mode === "batched" ? 1000 : 1));
        if (upTo <= w.sent) {
          setTimeout(pump, 1);
          return;
        }
        const entries = [];
        for (let i = w.sent + 1; i <= upTo; i++) entries.push({ cseq: i, changeset: changeset(wi, i) });
        w.inflight = true;
        w.sentAt = t;
        w.pushes++;
        w.ws.send(encode({ t: FRAME.push, id: ++w.frameId, client: w.id, entries }));
        w.sent = upTo;
      };
      w.ws.onmessage = (ev) => {
        const f = parseRelayFrame(decode(new Uint8Array(ev.data as ArrayBuffer)));
        if (f.t === FRAME.error) {
          if (f.error.code !== "overloaded") throw new Error(`w3 ${w.id}: ${f.error.code} ${f.error.message}`);
          // As the replica does: wait as asked, then resend from the first unacknowledged entry.
          w.refused++;
          w.sent = w.acked;
          w.inflight = false;
          setTimeout(pump, f.retryAfterMs ?? 1000);
          return;
        }
        if (f.t !== FRAME.ack) return;
        const t = now();
        w.rtts.push(t - w.sentAt);
        w.acked += f.acks.length;
        if (t <= end) w.ackedInWindow += f.acks.length;
        w.inflight = false;
        pump();
      };
      pump();
    });
  });
  setTimeout(() => (stopped = true), job.ms);
  await done;
  const acceptedPerSec = writers.reduce((s, w) => s + w.ackedInWindow, 0) / (job.ms / 1000);
  const pushes = writers.reduce((s, w) => s + w.pushes, 0);
  const acked = writers.reduce((s, w) => s + w.acked, 0);
  const rtts = writers.flatMap((w) => w.rtts).sort((a, b) => a - b);
  for (const w of writers) w.ws.close();

  // The log afterwards: seq 1..head with no gap, each writer's cseqs 1..acked once.
  const http = httpTransport({ url: job.url, db: job.db, token: job.tokens[0]! });
  const perClient = new Map<string, number>();
  let after = 0;
  let gapless = true;
  for (;;) {
    const page = await http.pull(after, 10_000);
    for (const e of page.entries) {
      if (e.seq !== after + 1) gapless = false;
      after = e.seq;
      const c = (perClient.get(e.client) ?? 0) + 1;
      if (e.cseq !== c) gapless = false;
      perClient.set(e.client, c);
    }
    if (!page.more) break;
  }
  const complete = after === acked && writers.every((w) => perClient.get(w.id) === w.acked);
  return {
    acceptedPerSec,
    pushesPerSec: pushes / (job.ms / 1000),
    meanBatch: acked / pushes,
    rttP50: rtts[Math.floor(rtts.length * 0.5)] ?? NaN,
    rttP99: rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * 0.99))] ?? NaN,
    refused: writers.reduce((s, w) => s + w.refused, 0),
    head: after,
    gapless: gapless && complete,
  };
}

/**
 * W4's log: `entries` transactions of mixed sizes from one writer — every
 * 1000th inserts 1000 rows, every 100th 100 rows, every 10th 10 rows, the
 * rest alternate between inserting one row and updating one. Returns the
 * number of rows a replica ends with.
 */
async function w4Seed(job: Extract<Job, { kind: "w4-seed" }>) {
  const a = await openReplica({ url: job.url, db: job.db, token: job.token, driver: "node", schema: [TODOS_SCHEMA] });
  let next = 1;
  for (let j = 1; j <= job.entries; j++) {
    const size = j % 1000 === 0 ? 1000 : j % 100 === 0 ? 100 : j % 10 === 0 ? 10 : 1;
    await a.transaction(async (tx) => {
      if (size === 1 && j % 2 === 0 && next > 1) {
        const id = 1 + (j % (next - 1));
        await tx.exec(UPDATE_TODO, [j % 2, 1900000000000 + j, id]);
        return;
      }
      for (let i = 0; i < size; i++, next++) await tx.exec(INSERT_TODO, w1Row(next));
    });
  }
  let ev = await a.sync();
  while (a.status().pending > 0) ev = await a.sync();
  const rows = await count(a);
  await a.close();
  return { rows, head: ev.head };
}

async function run(job: Job): Promise<unknown> {
  installWireMeter();
  switch (job.kind) {
    case "limit":
      return limit(job.n);
    case "w1-write":
      return w1Write(job);
    case "catch-up":
      return catchUp(job);
    case "w2-writer":
      return w2Writer(job);
    case "w2-reader":
      return w2Reader(job);
    case "w3":
      return w3(job);
    case "w4-seed":
      return w4Seed(job);
  }
}

if (process.send) {
  const job = (await nextMessage()) as Job;
  try {
    const result = await run(job);
    await reply({ stage: "done", result: { ...(result as object), ...common() } });
    process.exit(0);
  } catch (e) {
    await reply({ stage: "error", error: String((e as Error)?.stack ?? e) });
    process.exit(1);
  }
}

export type { WireBytes };
