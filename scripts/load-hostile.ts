/**
 * The memory half of `npm run test:load` (issue 17), against a relay of its
 * own: the Worker and Durable Object in workerd through Miniflare, in a
 * process of its own (bench/relay-host.ts), so that requests reach workerd
 * directly (wrangler dev's proxy answers an early 413 with "worker restarted"
 * and loses some) and its memory is the relay's alone. Its workerd process is
 * measured from /proc (peak RSS, the high-water mark reset before each case)
 * and its JS heap through the inspector, while
 *   - gzip bombs of 1 MiB (1 GiB of zeros) and 4 MiB (4 GiB), one at a time
 *     and four 4 MiB ones at once, are each answered 413 and raise the peak
 *     by less than 64 MiB;
 *   - 200 MB are written while 10 subscribers have stopped reading (their TCP
 *     sockets paused) and one reads: the relay's memory stays flat, and
 *     afterwards every stalled subscriber catches up, every entry once and in
 *     order (live frames, then pulls after the relay's `head` frame).
 */
import { fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { request as httpRequest } from "node:http";
import { DatabaseSync } from "node:sqlite";
import { createGzip } from "node:zlib";
import { decode, encode } from "../protocol/codec.ts";
import { GOT_EVERY_BYTES, MAX_UNREAD_SOCKET_BYTES } from "../protocol/limits.ts";
import { signToken } from "../protocol/token.ts";
import { MSGPACK } from "../protocol/version.ts";
import { findByName, memory, resetPeak } from "../bench/proc.ts";
import { connectInspector, sampleHeap } from "../bench/inspector.ts";
import { freePort, LOCAL_SECRET } from "./local-relay.ts";
import { RawWebSocket } from "./raw-ws.ts";

const MiB = 1024 * 1024;
const BOMB_GROWTH_LIMIT = 64 * MiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number) => `${(bytes / MiB).toFixed(0)} MiB`;
const progress = (s: string) => process.stderr.write(`load: ${s}\n`);

export interface HostileRelay {
  url: string;
  secret: string;
  /** The workerd processes that run the Worker and the Durable Object. */
  pids(): number[];
}

/** Run the checks against a relay started for them; `heapPeak` is the relay's JS heap at its highest meanwhile. */
export async function hostileChecks(): Promise<{ report: string[]; failures: string[]; heapPeak: number }> {
  const report: string[] = [];
  const failures: string[] = [];
  const inspectorPort = await freePort();
  const host = fork(fileURLToPath(new URL("../bench/relay-host.ts", import.meta.url)), [], { env: { ...process.env, INSPECTOR_PORT: String(inspectorPort) }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  try {
    const [{ url }] = (await once(host, "message")) as [{ url: string }];
    const pids = findByName(host.pid!, "workerd");
    const inspector = await connectInspector(inspectorPort);
    const heap = sampleHeap(inspector);
    try {
      const relay: HostileRelay = { url, secret: LOCAL_SECRET, pids: () => pids };
      await bombs(relay, report, failures);
      await stalledSubscribers(relay, report, failures);
      await heap.current();
      return { report, failures, heapPeak: heap.peak() };
    } finally {
      heap.stop();
      inspector.close();
    }
  } finally {
    host.send("stop");
    if (host.exitCode === null) await once(host, "exit");
  }
}

// ---------------------------------------------------------------- gzip bombs

/** `gib` GiB of zeros, gzipped at level 9 as one member (~1 MiB per GiB), built as a stream. */
async function bomb(gib: number): Promise<Buffer> {
  const gz = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gz.on("data", (c: Buffer) => out.push(c));
  const zeros = Buffer.alloc(MiB);
  for (let i = 0; i < gib * 1024; i++) if (!gz.write(zeros)) await once(gz, "drain");
  gz.end();
  await once(gz, "end");
  return Buffer.concat(out);
}

/**
 * POST a body in 16 KiB writes, a millisecond apart, until the answer comes:
 * a relay that refuses early answers before it has read the rest, and then
 * closes; what it has not read is reset, and a client that had raced ahead
 * would lose the answer with it.
 */
function post(url: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(url, { method: "POST", headers: { ...headers, "content-length": String(body.byteLength) } });
    req.on("response", (res) => {
      answered = true;
      let text = "";
      res.on("data", (c: Buffer) => (text += c.toString("utf8")));
      res.on("end", () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, text });
      });
    });
    req.on("error", (e) => (answered ? undefined : reject(e)));
    req.setTimeout(60_000, () => req.destroy(new Error("no answer in 60 s")));
    void (async () => {
      for (let at = 0; at < body.byteLength && !answered && !req.destroyed; at += 16 * 1024) {
        if (!req.write(body.subarray(at, at + 16 * 1024))) await once(req, "drain").catch(() => undefined);
        await sleep(1);
      }
      if (!answered && !req.destroyed) req.end();
    })();
  });
}

async function bombs(relay: HostileRelay, report: string[], failures: string[]): Promise<void> {
  const token = await signToken({ db: "bombs", role: "write", sub: "bomber" }, relay.secret);
  const headers = { authorization: `Bearer ${token}`, "content-type": MSGPACK, "content-encoding": "gzip" };
  progress("building gzip bombs");
  const sizes = { 1: await bomb(1), 4: await bomb(4) };
  const cases: { name: string; gib: 1 | 4; n: number }[] = [
    { name: "1 GiB in 1 MiB", gib: 1, n: 1 },
    { name: "4 GiB in 4 MiB", gib: 4, n: 1 },
    { name: "four 4 GiB at once", gib: 4, n: 4 },
  ];
  for (const c of cases) {
    progress(`gzip bomb ${c.name}`);
    const pids = relay.pids();
    resetPeak(pids);
    const before = memory(pids).rss;
    const t = performance.now();
    const answers = await Promise.all(Array.from({ length: c.n }, () => post(`${relay.url}/v1/db/bombs/push`, headers, sizes[c.gib])));
    const ms = performance.now() - t;
    const peak = memory(pids).peak;
    const statuses = answers.map((a) => a.status);
    report.push(`  gzip bomb ${c.name.padEnd(18)} (${mb(sizes[c.gib].byteLength)}): ${statuses.join(", ")} in ${ms.toFixed(0)} ms; relay RSS ${mb(before)} → peak ${mb(peak)} (+${mb(peak - before)})`);
    if (statuses.some((s) => s !== 413) || !answers.every((a) => a.text.includes("payload_too_large"))) failures.push(`bomb ${c.name}: answered ${statuses.join(", ")} ${answers[0]?.text}`);
    if (peak - before >= BOMB_GROWTH_LIMIT) failures.push(`bomb ${c.name}: peak RSS grew by ${mb(peak - before)} (limit ${mb(BOMB_GROWTH_LIMIT)})`);
  }
}

// ---------------------------------------------------------------- stalled subscribers

const STALLED = 10;
const WRITE_BYTES = 200 * 1000 * 1000;
const ENTRY_BYTES = 100 * 1000;
const ENTRIES_PER_PUSH = 10;
const DB = "stalled";

/** A valid changeset of about `bytes`: one row with a random blob (random, so gzip cannot make the test cheap). */
function blobChangeset(bytes: number): Uint8Array {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
  const session = db.createSession();
  db.prepare("INSERT INTO t VALUES (1, randomblob(?))").run(bytes);
  const out = session.changeset();
  db.close();
  return out;
}

/**
 * A protocol-level subscriber as the client library behaves: applies entries
 * frames in seq order, reports what it has read (`got`), and after a `head`
 * frame or a gap pulls over HTTP from its cursor. It keeps only the seqs.
 */
class Subscriber {
  readonly seqs: number[] = [];
  heads = 0;
  closed: number | undefined;
  readonly failedPulls: string[] = [];
  private read = 0;
  private reported = 0;
  private pulling: Promise<void> = Promise.resolve();
  private readonly ws: RawWebSocket;
  private readonly pullUrl: string;
  private readonly token: string;

  constructor(ws: RawWebSocket, url: string, db: string, token: string) {
    this.ws = ws;
    this.pullUrl = `${url}/v1/db/${db}/pull`;
    this.token = token;
    ws.onmessage = (data) => typeof data !== "string" && this.frame(data);
    ws.onclose = (code) => (this.closed = code);
    ws.send(encode({ t: "sub", after: 0 }));
  }

  get cursor(): number {
    return this.seqs.at(-1) ?? 0;
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  close(): void {
    this.ws.close();
  }

  /** Pull from the cursor to the end of the log (queued behind any pull already running). */
  catchUp(): Promise<void> {
    this.pulling = this.pulling.then(async () => {
      for (;;) {
        try {
          const res = await fetch(`${this.pullUrl}?after=${this.cursor}&limit=1000`, { headers: { authorization: `Bearer ${this.token}`, "accept-encoding": "identity" } });
          const page = decode(new Uint8Array(await res.arrayBuffer())) as { entries: { seq: number }[]; more: boolean };
          this.take(page.entries);
          if (!page.more) return;
        } catch (e) {
          // As the client library does: a failed pull is retried (and counted for the report).
          this.failedPulls.push(String((e as Error)?.cause ?? e));
          await sleep(200);
        }
      }
    });
    return this.pulling;
  }

  private frame(data: Buffer): void {
    this.read += data.byteLength;
    const f = decode(data) as { t: string; entries?: { seq: number }[]; head?: number };
    if (f.t === "head" || this.read - this.reported >= GOT_EVERY_BYTES) {
      this.reported = this.read;
      this.ws.send(encode({ t: "got", bytes: this.read }));
    }
    if (f.t === "head") {
      this.heads++;
      if (f.head! > this.cursor) void this.catchUp();
    } else if (f.t === "entries") {
      if (f.entries![0]!.seq > this.cursor + 1) void this.catchUp();
      else this.take(f.entries!);
    }
  }

  private take(entries: { seq: number }[]): void {
    for (const e of entries) if (e.seq === this.cursor + 1) this.seqs.push(e.seq);
  }
}

/** Write WRITE_BYTES to `db` in pushes of ENTRIES_PER_PUSH entries; the relay's RSS before, sampled every 250 ms, and its peak. */
async function write(relay: HostileRelay, db: string, failures: string[]): Promise<{ entries: number; bytes: number; ms: number; before: number; peak: number; samples: number[] }> {
  const token = await signToken({ db, role: "write", sub: "writer" }, relay.secret);
  const changeset = blobChangeset(ENTRY_BYTES);
  const pushes = Math.ceil(WRITE_BYTES / (ENTRY_BYTES * ENTRIES_PER_PUSH));
  const pids = relay.pids();
  resetPeak(pids);
  const before = memory(pids).rss;
  const samples: number[] = [];
  const sampler = setInterval(() => samples.push(memory(pids).rss), 250);
  let cseq = 0;
  const t = performance.now();
  try {
    for (let p = 0; p < pushes; p++) {
      const body = encode({ client: "writer", entries: Array.from({ length: ENTRIES_PER_PUSH }, () => ({ cseq: ++cseq, changeset })) });
      const res = await fetch(`${relay.url}/v1/db/${db}/push`, { method: "POST", body, headers: { authorization: `Bearer ${token}`, "content-type": MSGPACK } });
      if (res.status !== 200) {
        failures.push(`writing to ${db}: push ${p} answered ${res.status} ${await res.text()}`);
        break;
      }
      await res.arrayBuffer();
    }
  } finally {
    clearInterval(sampler);
  }
  return { entries: cseq, bytes: cseq * changeset.byteLength, ms: performance.now() - t, before, peak: memory(pids).peak, samples };
}

async function stalledSubscribers(relay: HostileRelay, report: string[], failures: string[]): Promise<void> {
  // The control: the same write with only the subscriber that reads, to another database: what the relay's memory does anyway.
  const subscribe = async (db: string, n: number) => {
    const reader = await signToken({ db, role: "read", sub: "reader" }, relay.secret);
    const wsUrl = `${relay.url.replace(/^http/, "ws")}/v1/db/${db}/ws?token=${reader}`;
    const subs = await Promise.all(Array.from({ length: n }, async () => new Subscriber(await RawWebSocket.open(wsUrl), relay.url, db, reader)));
    await sleep(500); // subscribed
    return subs;
  };
  progress(`writing ${mb(WRITE_BYTES)} with one subscriber reading (the control)`);
  const alone = await subscribe("control", 1);
  const control = await write(relay, "control", failures);
  for (const s of alone) s.close();
  const subs = await subscribe(DB, STALLED + 1);
  const stalled = subs.slice(1);
  for (const s of stalled) s.pause();
  progress(`writing ${mb(WRITE_BYTES)} with one subscriber reading and ${STALLED} stalled`);
  const w = await write(relay, DB, failures);
  const grew = (r: typeof w) => r.peak - r.before;
  const shape = (r: typeof w) => [0.25, 0.5, 0.75, 1].map((f) => mb(r.samples[Math.min(r.samples.length - 1, Math.floor(r.samples.length * f))] ?? r.before)).join(", ");
  report.push(
    `  ${mb(w.bytes)} written (${w.entries} entries, ${(w.ms / 1000).toFixed(1)} s) with ${STALLED} stalled subscribers and one reading: relay RSS ${mb(w.before)} → peak ${mb(w.peak)} (+${mb(grew(w))}); at each quarter ${shape(w)}`,
    `  the same written with only the reading subscriber (the control):     relay RSS ${mb(control.before)} → peak ${mb(control.peak)} (+${mb(grew(control))}); at each quarter ${shape(control)}`,
  );
  // Flat: beyond what the relay's memory does anyway, the stalled sockets hold at most their bound each (MAX_UNREAD_SOCKET_BYTES).
  // (Before flow control: +75-80 MiB per 100 MiB written, with 1 or 10 of them.) Within one write the RSS
  // wanders by tens of MiB either way (storage, the reading subscriber's pulls), so it is compared with the control.
  const allowed = STALLED * MAX_UNREAD_SOCKET_BYTES + 16 * MiB;
  if (grew(w) - grew(control) > allowed) failures.push(`stalled subscribers: the relay's peak RSS grew ${mb(grew(w) - grew(control))} more than without them (allowed ${mb(allowed)})`);
  const head = w.entries;

  // They read again: frames, a head frame, then pulls.
  progress("stalled subscribers: reading again");
  for (const s of stalled) s.resume();
  const deadline = Date.now() + 120_000;
  while (subs.some((s) => s.cursor < head) && Date.now() < deadline) {
    await sleep(500);
    for (const s of subs) if (s.cursor < head) void s.catchUp();
  }
  const inOrder = (s: Subscriber) => s.seqs.length === head && s.seqs.every((q, i) => q === i + 1);
  const bad = subs.filter((s) => !inOrder(s));
  const failedPulls = subs.flatMap((s) => s.failedPulls);
  report.push(`  afterwards: ${subs.length - bad.length} of ${subs.length} subscribers hold seq 1..${head} in order; head frames: reader ${subs[0]!.heads}, stalled ${stalled.map((s) => s.heads).join(" ")}; ${failedPulls.length} pulls failed and were retried${failedPulls.length ? ` (${failedPulls[0]})` : ""}`);
  if (bad.length > 0) failures.push(`stalled subscribers: ${bad.length} did not catch up in order (cursors ${bad.map((s) => s.cursor).join(", ")} of ${head})`);
  for (const s of subs) s.close();
}
