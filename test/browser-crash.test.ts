/**
 * Crashes of the browser replica in real Chromium, on OPFS (opfs-sahpool, WAL
 * in exclusive locking mode) in a profile on disk: its database worker
 * terminated, its tab closed, or the whole browser killed, at arbitrary
 * points of a burst of write transactions or of a sync step. After each, the database reopens with every transaction whole or
 * absent, every acknowledged one present, the outbox holding one entry per
 * unsent transaction, and at the end a Node replica converges on it. The kill
 * points are random (so each run tries others); the assertions hold for any.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BrowserContext, Page } from "playwright-core";
import { descendants } from "../bench/proc.ts";
import { bundlePage, findChromium, launchProfile, WAIT, watchPage } from "./support/browser.ts";
import { CRASH_SCHEMA, ROWS, type CrashState } from "./support/replica-page.ts";
import { startRelay, type TestRelay } from "./support/relay.ts";
import { closeReplicas, replica } from "./support/replicas.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
/** Transactions of the Node replica use tx numbers from here (the browser's stay below). */
const REMOTE = 1_000_000;
/** The outbox entry of the `total` row, written at the first open. */
const SEED = 1;

let dir: string;
/** The browser profile, on disk: its OPFS outlives the browser. */
let profile: string;
let relay: TestRelay;
let context: BrowserContext | undefined;
const logs: string[][] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "changeset-relay-crash-"));
  profile = mkdtempSync(join(tmpdir(), "changeset-relay-crash-profile-"));
  await bundlePage(`${root}test/support/replica-page.ts`, dir);
  relay = await startRelay({ assets: dir });
});
after(async () => {
  await closeReplicas();
  await context?.close();
  await relay?.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(profile, { recursive: true, force: true });
});

/** SIGKILL to every Chromium process this test started (playwright-core spawns the browser as our child). */
async function killChromium(): Promise<void> {
  const { path } = await findChromium();
  for (const pid of descendants(process.pid)) {
    try {
      if (readlinkSync(`/proc/${pid}/exe`) === path) process.kill(pid, "SIGKILL");
    } catch {
      // ended meanwhile
    }
  }
}

type Fn = "open" | "burst" | "syncInBackground" | "waitAcked" | "kill" | "state" | "takeOver" | "syncAll" | "close";
function call<T>(page: Page, fn: Fn, arg?: unknown): Promise<T> {
  return page.evaluate(([f, a]) => (globalThis as unknown as { crash: Record<string, (x: unknown) => Promise<unknown>> }).crash[f]!(a), [fn, arg] as const) as Promise<T>;
}

async function newPage(context: BrowserContext, name: string): Promise<Page> {
  const page = await context.newPage();
  logs.push(watchPage(page, name));
  await page.goto(`${relay.url}/index.html`);
  await page.waitForSelector("body[data-ready='1']", { state: "attached", timeout: WAIT });
  return page;
}

/** What must hold after any crash; returns the transactions present. */
function check(s: CrashState, acked: number[], what: string): Set<number> {
  const why = `${what}: ${JSON.stringify({ ...s, groups: s.groups.length })}\n${logs.flat().slice(-20).join("\n")}`;
  assert.deepEqual({ journal: s.journal, locking: s.locking, synchronous: s.synchronous, integrity: s.integrity }, { journal: "wal", locking: "exclusive", synchronous: 2, integrity: "ok" }, why);
  const partial = s.groups.filter((g) => g.c !== ROWS);
  assert.deepEqual(partial, [], `every transaction whole or absent — ${why}`);
  const present = new Set(s.groups.map((g) => g.tx));
  const own = s.groups.filter((g) => g.tx < REMOTE).length;
  assert.equal(s.total, own * ROWS, `total agrees with the rows of the browser's own transactions — ${why}`);
  assert.deepEqual(acked.filter((t) => !present.has(t)), [], `every acknowledged transaction survives — ${why}`);
  assert.equal(s.pending, s.outbox, why);
  return present;
}

// The timeout is not a speed target: a broken journal can leave the page waiting for ever.
it("a browser replica on OPFS survives its worker, its tab or the browser dying mid-write or mid-sync: transactions whole or absent, outbox matching", { timeout: 300_000 }, async () => {
  const db = `crash-${process.pid}`;
  const token = await relay.token("write", "crash-browser", db);
  context = await launchProfile(profile);
  let page = await newPage(context, "tab1");
  let next = 1;
  let s = await call<CrashState>(page, "open", { db, token });
  check(s, [], "fresh");

  // 1. The worker terminated during a burst, offline: the outbox holds one entry per transaction present.
  for (const [after, jitterMs, atCommit] of [[0, 2, false], [1, 0, true], [3, 5, false], [8, 1, true], [2, 10, false], [20, 3, true], [5, 20, false], [1, 1, true], [13, 4, true], [4, 2, true], [6, 0, true], [9, 30, false]] as const) {
    await call(page, "burst", { from: next, count: 100_000 });
    const acked = await call<number[]>(page, "kill", { after, jitterMs, atCommit });
    s = await call<CrashState>(page, "open", { db, token });
    const present = check(s, acked, `worker killed after ${after} acks`);
    assert.equal(s.outbox, present.size + SEED, `one outbox entry per transaction (offline) — ${JSON.stringify(s)}`);
    next = Math.max(next, ...present) + 1;
  }

  // 2. Two tabs: the owner tab closes during a burst; the follower takes over the database and goes on writing.
  const follower = await newPage(context, "tab2");
  assert.equal((await call<CrashState>(follower, "open", { db, token })).owner, false, "the second tab follows");
  await call(page, "burst", { from: next, count: 100_000 });
  const acked = await call<number[]>(page, "waitAcked", { after: 5 });
  await page.close(); // mid-burst: the page has a transaction in flight
  s = await call<CrashState>(follower, "takeOver");
  assert.equal(s.owner, true);
  let present = check(s, acked, "owner tab closed");
  assert.equal(s.outbox, present.size + SEED, "one outbox entry per transaction (offline)");
  next = Math.max(next, ...present) + 1;
  await call(follower, "burst", { from: next, count: 3 });
  const afterTakeover = await call<number[]>(follower, "kill", { after: 3, jitterMs: 0 });
  assert.deepEqual(afterTakeover, [next, next + 1, next + 2], "the new owner writes");
  page = follower;
  s = await call<CrashState>(page, "open", { db, token });
  present = check(s, afterTakeover, "after the takeover");
  next = Math.max(next, ...present) + 1;

  // 3. The worker terminated during sync (push of the outbox, pull and apply of remote entries).
  const node = await replica(relay, db, "crash-node", "node", { schema: CRASH_SCHEMA });
  let remote = REMOTE;
  for (const jitterMs of [0, 5, 20, 60, 150]) {
    for (let e = 0; e < 40; e++, remote++) {
      await node.transaction(async (tx) => {
        for (let k = 0; k < ROWS; k++) await tx.exec("INSERT INTO item VALUES (?, ?, ?)", [remote, k, `remote ${remote}`]);
      });
    }
    await node.sync();
    await call(page, "syncInBackground");
    await call(page, "kill", { after: 0, jitterMs });
    s = await call<CrashState>(page, "open", { db, token });
    check(s, [], `worker killed during a sync, after ~${jitterMs} ms`);
  }

  // 4. The whole browser killed (SIGKILL) during a burst, then started again on its profile.
  await call(page, "burst", { from: next, count: 100_000 });
  const beforeKill = await call<number[]>(page, "waitAcked", { after: 10 });
  await killChromium();
  await context.close().catch(() => undefined);
  context = await launchProfile(profile);
  page = await newPage(context, "restarted");
  s = await call<CrashState>(page, "open", { db, token });
  check(s, beforeKill, "browser killed");

  // 5. Everything the browser kept replicates: a Node replica ends equal to it.
  s = await call<CrashState>(page, "syncAll");
  check(s, [], "synced");
  assert.equal(s.outbox, 0);
  await node.sync();
  const nodeGroups = await node.query<{ tx: number; c: number }>("SELECT tx, count(*) AS c FROM item GROUP BY tx ORDER BY tx");
  assert.deepEqual(s.groups, nodeGroups, "the Node replica has exactly the browser's transactions and its own");
  assert.equal((await node.query<{ n: number }>("SELECT n FROM total"))[0]!.n, s.total);
  assert.ok(s.groups.filter((g) => g.tx >= REMOTE).length === remote - REMOTE);
  await call(page, "close");
});
