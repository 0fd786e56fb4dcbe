/**
 * The memory half of `npm run test:load` (issue 17), against the same
 * `wrangler dev` relay: the relay's workerd process is measured from /proc
 * (peak RSS, its high-water mark reset before each case) while
 *   - gzip bombs of 1 MiB (1 GiB of zeros) and 4 MiB (4 GiB), one at a time
 *     and four 4 MiB ones at once, are each answered 413 and raise the peak
 *     by less than 64 MiB;
 *   - 200 MB are written while 10 subscribers have stopped reading (their TCP
 *     sockets paused) and one reads: the relay's memory stays flat, and
 *     afterwards every stalled subscriber catches up, every entry once and in
 *     order (live frames, then pulls after the relay's `head` frame).
 */
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { DatabaseSync } from "node:sqlite";
import { createGzip } from "node:zlib";
import { decode, encode } from "../protocol/codec.ts";
import { GOT_EVERY_BYTES } from "../protocol/limits.ts";
import { signToken } from "../protocol/token.ts";
import { MSGPACK } from "../protocol/version.ts";
import { memory, resetPeak } from "../bench/proc.ts";
import { RawWebSocket } from "./raw-ws.ts";

const MiB = 1024 * 1024;
const BOMB_GROWTH_LIMIT = 64 * MiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number) => `${(bytes / MiB).toFixed(0)} MiB`;

export interface HostileRelay {
  url: string;
  secret: string;
  /** The workerd processes that run the Worker and the Durable Object (not wrangler's dev proxy). */
  pids(): number[];
}

export async function hostileChecks(relay: HostileRelay): Promise<{ report: string[]; failures: string[] }> {
  const report: string[] = [];
  const failures: string[] = [];
  await bombs(relay, report, failures);
  await stalledSubscribers(relay, report, failures);
  return { report, failures };
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

/** POST a body in 64 KiB writes until the answer comes: a relay that refuses early answers before it has read the rest. */
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
      for (let at = 0; at < body.byteLength && !answered && !req.destroyed; at += 64 * 1024) {
        if (!req.write(body.subarray(at, at + 64 * 1024))) await once(req, "drain").catch(() => undefined);
      }
      if (!answered && !req.destroyed) req.end();
    })();
  });
}

async function bombs(relay: HostileRelay, report: string[], failures: string[]): Promise<void> {
  const token = await signToken({ db: "bombs", role: "write", sub: "bomber" }, relay.secret);
  const headers = { authorization: `Bearer ${token}`, "content-type": MSGPACK, "content-encoding": "gzip" };
  const sizes = { 1: await bomb(1), 4: await bomb(4) };
  const cases: { name: string; gib: 1 | 4; n: number }[] = [
    { name: "1 GiB in 1 MiB", gib: 1, n: 1 },
    { name: "4 GiB in 4 MiB", gib: 4, n: 1 },
    { name: "four 4 GiB at once", gib: 4, n: 4 },
  ];
  for (const c of cases) {
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
  private read = 0;
  private reported = 0;
  private pulling: Promise<void> = Promise.resolve();
  private readonly ws: RawWebSocket;
  private readonly pullUrl: string;
  private readonly token: string;

  constructor(ws: RawWebSocket, url: string, token: string) {
    this.ws = ws;
    this.pullUrl = `${url}/v1/db/${DB}/pull`;
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
        const res = await fetch(`${this.pullUrl}?after=${this.cursor}&limit=1000`, { headers: { authorization: `Bearer ${this.token}`, "accept-encoding": "identity" } });
        const page = decode(new Uint8Array(await res.arrayBuffer())) as { entries: { seq: number }[]; more: boolean };
        this.take(page.entries);
        if (!page.more) return;
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

async function stalledSubscribers(relay: HostileRelay, report: string[], failures: string[]): Promise<void> {
  const reader = await signToken({ db: DB, role: "read", sub: "reader" }, relay.secret);
  const writer = await signToken({ db: DB, role: "write", sub: "writer" }, relay.secret);
  const wsUrl = `${relay.url.replace(/^http/, "ws")}/v1/db/${DB}/ws?token=${reader}`;
  const subs = await Promise.all(Array.from({ length: STALLED + 1 }, async () => new Subscriber(await RawWebSocket.open(wsUrl), relay.url, reader)));
  await sleep(500); // subscribed
  const stalled = subs.slice(1);
  for (const s of stalled) s.pause();

  const changeset = blobChangeset(ENTRY_BYTES);
  const pushes = Math.ceil(WRITE_BYTES / (ENTRY_BYTES * ENTRIES_PER_PUSH));
  const pids = relay.pids();
  resetPeak(pids);
  const before = memory(pids).rss;
  const samples: number[] = [];
  const sampler = setInterval(() => samples.push(memory(pids).rss), 250);
  let cseq = 0;
  const t = performance.now();
  for (let p = 0; p < pushes; p++) {
    const body = encode({ client: "writer", entries: Array.from({ length: ENTRIES_PER_PUSH }, () => ({ cseq: ++cseq, changeset })) });
    const res = await fetch(`${relay.url}/v1/db/${DB}/push`, { method: "POST", body, headers: { authorization: `Bearer ${writer}`, "content-type": MSGPACK } });
    if (res.status !== 200) {
      failures.push(`stalled subscribers: push ${p} answered ${res.status} ${await res.text()}`);
      break;
    }
    await res.arrayBuffer();
  }
  const writeMs = performance.now() - t;
  clearInterval(sampler);
  const peak = memory(pids).peak;
  const quarter = samples[Math.floor(samples.length / 4)] ?? before;
  const last = samples.at(-1) ?? before;
  report.push(
    `  ${STALLED} stalled subscribers while ${mb(cseq * changeset.byteLength)} are written (${(writeMs / 1000).toFixed(1)} s): relay RSS ${mb(before)} before, ${mb(quarter)} at a quarter, ${mb(last)} at the end, peak ${mb(peak)}`,
  );
  // Flat: what the stalled sockets may hold is bounded (MAX_UNREAD_SOCKET_BYTES each), so after the first quarter it does not grow.
  if (last - quarter > 32 * MiB) failures.push(`stalled subscribers: relay RSS grew from ${mb(quarter)} at a quarter of the write to ${mb(last)}`);
  if (peak - before > STALLED * 8 * MiB) failures.push(`stalled subscribers: relay peak RSS grew by ${mb(peak - before)}`);

  // They read again: frames, a head frame, then pulls.
  for (const s of stalled) s.resume();
  const head = cseq;
  const deadline = Date.now() + 120_000;
  while (subs.some((s) => s.cursor < head) && Date.now() < deadline) {
    await sleep(500);
    for (const s of subs) if (s.cursor < head) void s.catchUp();
  }
  const inOrder = (s: Subscriber) => s.seqs.length === head && s.seqs.every((q, i) => q === i + 1);
  const bad = subs.filter((s) => !inOrder(s));
  report.push(`  afterwards: ${subs.length - bad.length} of ${subs.length} subscribers hold seq 1..${head} in order; head frames: reader ${subs[0]!.heads}, stalled ${stalled.map((s) => s.heads).join(" ")}`);
  if (bad.length > 0) failures.push(`stalled subscribers: ${bad.length} did not catch up in order (cursors ${bad.map((s) => s.cursor).join(", ")} of ${head})`);
  for (const s of subs) s.close();
}
