/**
 * The bench's page in Chromium (bench/browser.ts builds it and drives it):
 * W1 and W2 through "changeset-relay/browser" as an app runs it, the replica
 * in its Web Worker on sqlite-wasm, persisted in OPFS. Each browser context
 * is one replica (its own profile, so its own OPFS). Times are
 * performance.timeOrigin + performance.now(), comparable between the pages of
 * one browser.
 */
import { openReplica, type BrowserReplica } from "../client/browser/index.ts";
import { INSERT_TODO, TODOS_SCHEMA, UPDATE_TODO, pushW1, w1Row, w2Update } from "./rows.ts";

const now = (): number => performance.timeOrigin + performance.now();

interface Open {
  db: string;
  token: string;
  live?: boolean;
  /** "memory" keeps the database off OPFS (to tell storage from the rest). */
  storage?: "auto" | "memory";
}

let replica: BrowserReplica | undefined;

async function open({ db, token, live = false, storage = "auto" }: Open): Promise<BrowserReplica> {
  replica = await openReplica({
    url: location.origin,
    db,
    token,
    live,
    storage,
    ...(storage === "memory" ? { path: ":memory:" } : {}),
    schema: [TODOS_SCHEMA],
    worker: new URL("./worker.js", import.meta.url),
    wasmUrl: new URL("./sqlite3.wasm", location.href).href,
  });
  return replica;
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 600_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function count(r: BrowserReplica): Promise<number> {
  return (await r.query<{ c: number }>("SELECT count(*) AS c FROM todos"))[0]!.c;
}

/** N rows in one transaction, the calls issued in one turn (README): one message to the worker and one back. */
async function insertRows(r: BrowserReplica, n: number): Promise<void> {
  await r.transaction((tx) => {
    const calls: Promise<unknown>[] = [];
    for (let i = 1; i <= n; i++) calls.push(tx.exec(INSERT_TODO, w1Row(i)));
    return Promise.all(calls);
  });
}

class Undo extends Error {}

/** The same rows awaiting each tx.exec (a round trip each), in a transaction then rolled back: ms to the last one's result. */
async function insertAwaitingEach(r: BrowserReplica, n: number): Promise<number> {
  const t0 = now();
  let ms = 0;
  await r
    .transaction(async (tx) => {
      for (let i = 1; i <= n; i++) await tx.exec(INSERT_TODO, w1Row(i));
      ms = now() - t0;
      throw new Undo();
    })
    .catch((e: unknown) => {
      if (!(e instanceof Undo)) throw e;
    });
  return ms;
}

/** W1, replica A: N rows in one transaction, then push; and the write again awaiting each call (not pushed). */
async function w1Write(job: Open & { n: number }) {
  const a = await open(job);
  const awaitedMs = await insertAwaitingEach(a, job.n);
  const t0 = now();
  await insertRows(a, job.n);
  const t1 = now();
  const error = await pushW1(a);
  const t2 = now();
  const storage = a.status().storage;
  await a.close();
  return { writeMs: t1 - t0, awaitedMs, pushMs: t2 - t1, storage, ...(error ? { error } : {}) };
}

/** W1 replica B: a fresh replica syncs until it has the whole log. */
async function catchUp(job: Open & { rows: number }) {
  const b = await open(job);
  const t0 = now();
  let ev = await b.sync();
  while (ev.cursor < ev.head) ev = await b.sync();
  const t1 = now();
  const rows = await count(b);
  await b.close();
  if (rows !== job.rows) throw new Error(`catch-up: ${rows} rows, expected ${job.rows}`);
  return { syncMs: t1 - t0 };
}

/** W2, replica A: holds rows 1..n, synced and live. Returns the log head after the seed. */
async function w2Seed(job: Open & { n: number }) {
  const a = await open({ ...job, live: true });
  await insertRows(a, job.n);
  await a.sync();
  await until(() => a.status().pending === 0 && a.status().connected, "A seeded and connected");
  return { seedHead: a.status().cursor };
}

/** W2, replica A: n single-row updates, each its own transaction; when each exec() resolved. */
async function w2Write(job: { n: number }) {
  const a = replica!;
  const resolved = new Array<number>(job.n + 1).fill(0);
  const start = now();
  for (let k = 1; k <= job.n; k++) {
    await a.exec(UPDATE_TODO, w2Update(k));
    resolved[k] = now();
  }
  await until(() => a.status().pending === 0, "A's updates confirmed");
  await a.close();
  return { start, resolved };
}

let events: number[] = [];
let last = 0;

/** W2, replica B: live, holding the seed; records every remote "change" (cursor, time). */
async function w2Listen(job: Open) {
  const b = await open({ ...job, live: true });
  await b.sync();
  await until(() => b.status().connected, "B connected");
  events = [];
  b.on("change", (e) => {
    if (e.source !== "remote") return;
    events.push(e.cursor, now());
    last = e.cursor;
  });
  return { cursor: b.status().cursor };
}

async function w2Events(job: { target: number }) {
  await until(() => last >= job.target, "B to receive every update");
  await replica!.close();
  return { events };
}

Object.assign(globalThis, { bench: { w1Write, catchUp, w2Seed, w2Write, w2Listen, w2Events } });
document.body.dataset.ready = "1";
