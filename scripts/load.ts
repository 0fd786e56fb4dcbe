/**
 * `npm run test:load`: many replicas against a real `wrangler dev` relay.
 *
 * Starts `wrangler dev --local` on a random port with a throwaway config,
 * secret (.dev.vars), --persist-to directory and a snapshot of the Worker
 * bundled the way the tests bundle it, all in a temp dir (the repository's
 * .dev.vars and .wrangler/state are never touched). Then
 * LOAD_REPLICAS replicas (default 50; node:sqlite on files and sqlite-wasm in
 * memory, alternating) write and sync for LOAD_SECONDS (default 60): each
 * loop one transaction of 1-3 statements on a small shared key space, plus a
 * journal row of its own, then a sync, then a short random pause. Afterwards
 * every replica syncs twice more and the script checks:
 *   - no sync or write failed;
 *   - the log is gapless, holds every committed transaction exactly once
 *     (per client: cseq 1..n, n = its committed transactions), no duplicate
 *     (client, cseq), and every journal row is in every replica;
 *   - all replicas and a fresh replica replaying the log from 0 are equal;
 *   - the relay's memory (RSS of the workerd runtime that runs the Worker
 *     and the Durable Object, sampled every second) is stable: last <= 2 x
 *     the value at 10 s. wrangler dev's own proxy in front of it is
 *     reported, not checked;
 *   - then the hostile checks of scripts/load-hostile.ts (gzip bombs and
 *     stalled subscribers), on a relay process of their own;
 *   - the relay's JS heap (workerd's inspector) stays under 100 MB throughout.
 * Exit code 0 when all hold; a short report either way.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openReplica, RelayError, type Replica } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { signToken } from "../protocol/token.ts";
import { freePort, workerBundle } from "./local-relay.ts";
import { hostileChecks } from "./load-hostile.ts";
import { connectInspector, sampleHeap } from "../bench/inspector.ts";

/** The relay's JS heap must stay under this during the whole run (issue 17). */
const HEAP_LIMIT = 100 * 1024 * 1024;

const SECONDS = Number(process.env.LOAD_SECONDS ?? 60);
const REPLICAS = Number(process.env.LOAD_REPLICAS ?? 50);
const DB = "load";
const root = fileURLToPath(new URL("..", import.meta.url));
const SCHEMA = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL DEFAULT 0)",
  "CREATE TABLE IF NOT EXISTS journal(id TEXT PRIMARY KEY, by TEXT NOT NULL)",
];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rand = (n: number) => Math.floor(Math.random() * n);

// ---------------------------------------------------------------- the relay

const dir = mkdtempSync(join(tmpdir(), "relay-load-"));
// wrangler watches the directory of the Worker's entry point: keep the replicas' files out of it.
const relayDir = join(dir, "relay");
const replicaDir = join(dir, "replicas");
mkdirSync(relayDir);
mkdirSync(replicaDir);
const secret = `load-${randomBytes(16).toString("hex")}`;

/**
 * The repository's wrangler.toml, pointed at a snapshot of the Worker bundled
 * now (so edits to worker/ during the run do not make wrangler reload it) and
 * without [assets] and the [build] that makes them (the demo is not needed here).
 */
async function writeConfig(): Promise<string> {
  writeFileSync(join(relayDir, "worker.js"), await workerBundle());
  const toml = readFileSync(join(root, "wrangler.toml"), "utf8")
    .replace(/^main\s*=.*$/m, `main = "worker.js"`)
    // Whole sections: [assets] and the [build] that makes it (each up to the next line starting with "[").
    .replace(/^\[(assets|build)\]\n(?:(?!\[).*\n?)*/gm, "");
  const path = join(relayDir, "wrangler.toml");
  writeFileSync(path, toml);
  // wrangler dev reads the secret from .dev.vars next to the config.
  writeFileSync(join(relayDir, ".dev.vars"), `RELAY_SECRET=${secret}\n`);
  return path;
}

async function startWrangler(): Promise<{ child: ChildProcess; url: string; port: number; inspectorPort: number }> {
  const port = await freePort();
  const inspectorPort = await freePort();
  const wrangler = createRequire(import.meta.url).resolve("wrangler/bin/wrangler.js");
  const args = [wrangler, "dev", "--local", "--no-bundle", "-c", await writeConfig(), "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspectorPort), "--persist-to", join(dir, "state"), "--show-interactive-dev-session=false", "--log-level", "warn"];
  const child = spawn(process.execPath, args, { cwd: relayDir, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" } });
  let output = "";
  child.stdout!.on("data", (b) => (output += b));
  child.stderr!.on("data", (b) => (output += b));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited (${child.exitCode}):\n${output}`);
    try {
      if ((await fetch(`${url}/v1/health`)).ok) return { child, url, port, inspectorPort };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`wrangler dev did not come up in 60 s:\n${output}`);
}

/**
 * The workerd processes under wrangler (pid): `relay` runs the Worker and
 * the Durable Object; `proxy` is the one wrangler dev puts on the public port
 * in front of it (its dev-server proxy, not part of a deployed relay).
 */
function workerd(pid: number, port: number): { relay: { pid: number; rss: number }[]; proxy: { pid: number; rss: number }[] } {
  const rows = execFileSync("ps", ["-e", "-o", "pid=,ppid=,rss=,args="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map((l) => /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/.exec(l))
    .filter((m) => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), rss: Number(m[3]), args: m[4]! }));
  const under = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of rows) if (under.has(r.ppid) && !under.has(r.pid)) (under.add(r.pid), (grew = true));
  }
  const out: ReturnType<typeof workerd> = { relay: [], proxy: [] };
  for (const r of rows) {
    if (!under.has(r.pid) || !/\bworkerd\b.*\bserve\b/.test(r.args)) continue;
    (r.args.includes(`--socket-addr=entry=127.0.0.1:${port} `) ? out.proxy : out.relay).push({ pid: r.pid, rss: r.rss });
  }
  return out;
}

/** RSS in KiB of the relay's workerd processes and of wrangler's dev proxy. */
function rss(pid: number, port: number): { relay: number; proxy: number } {
  const { relay, proxy } = workerd(pid, port);
  const sum = (ps: { rss: number }[]) => ps.reduce((n, p) => n + p.rss, 0);
  return { relay: sum(relay), proxy: sum(proxy) };
}

// ---------------------------------------------------------------- the load

interface Worker {
  client: string;
  replica: Replica;
  committed: string[];
  writes: number;
  syncs: number;
}

async function main(): Promise<boolean> {
  const { child, url, port, inspectorPort } = await startWrangler();
  // A stalled relay must fail the run, not hang it: requests have no timeout of their own.
  setTimeout(() => {
    console.error(`load: no result ${SECONDS + 480} s after the start: something stalled`);
    child.kill("SIGTERM");
    process.exit(1);
  }, (SECONDS + 480) * 1000).unref();
  // The relay's JS heap through wrangler's inspector proxy, sampled for the whole run.
  const inspector = await connectInspector(inspectorPort).catch((e) => {
    child.kill("SIGTERM");
    throw e;
  });
  const heap = sampleHeap(inspector);
  const failures: string[] = [];
  const samples: { t: number; kib: number; proxy: number }[] = [];
  const started = Date.now();
  const sample = () => {
    const { relay, proxy } = rss(child.pid!, port);
    samples.push({ t: (Date.now() - started) / 1000, kib: relay, proxy });
  };
  const sampler = setInterval(sample, 1000);
  try {
    console.log(`relay: wrangler dev at ${url} (pid ${child.pid}); ${REPLICAS} replicas for ${SECONDS} s`);
    const workers: Worker[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      const client = `load-${i}`;
      const driver: DriverKind = i % 2 === 0 ? "node" : "wasm";
      const replica = await openReplica({
        url,
        db: DB,
        token: await signToken({ db: DB, role: "write", sub: client }, secret),
        driver,
        path: driver === "node" ? join(replicaDir, `${client}.db`) : ":memory:",
        schema: SCHEMA,
      });
      workers.push({ client, replica, committed: [], writes: 0, syncs: 0 });
    }
    const fail = (w: Worker, what: string) => (e: unknown) => {
      failures.push(`${w.client} ${what}: ${e instanceof RelayError ? e.code : ""} ${(e as Error)?.message ?? e}`);
    };
    const deadline = Date.now() + SECONDS * 1000;
    await Promise.all(
      workers.map(async (w) => {
        await sleep(rand(1000)); // spread the start
        while (Date.now() < deadline && failures.length < 20) {
          const jid = `${w.client}-${w.writes++}`;
          await w.replica
            .transaction(async (tx) => {
              const k = String(rand(40));
              switch (rand(4)) {
                case 0:
                  await tx.exec("INSERT OR REPLACE INTO todo(id, title) VALUES (?, ?)", [k, `by ${w.client}`]);
                  break;
                case 1:
                  await tx.exec("UPDATE todo SET n = n + 1, done = 1 - done WHERE id = ?", [k]);
                  break;
                case 2:
                  await tx.exec("DELETE FROM todo WHERE id = ?", [k]);
                  break;
                default:
                  await tx.exec("UPDATE todo SET title = ? WHERE id IN (?, ?, ?)", [`many by ${w.client}`, k, String(rand(40)), String(rand(40))]);
              }
              await tx.exec("INSERT INTO journal(id, by) VALUES (?, ?)", [jid, w.client]);
            })
            .then(() => w.committed.push(jid), fail(w, "write"));
          await w.replica.sync().then(() => w.syncs++, fail(w, "sync"));
          await sleep(50 + rand(450));
        }
      }),
    );
    const loadSeconds = (Date.now() - started) / 1000;
    for (let pass = 0; pass < 2; pass++) for (const w of workers) await w.replica.sync().catch(fail(w, "final sync"));

    // The log: gapless, each committed transaction once.
    const reader = await signToken({ db: DB, role: "read", sub: "checker" }, secret);
    const log: { seq: number; client: string; cseq: number }[] = [];
    for (let after = 0; ; ) {
      const page = await fetch(`${url}/v1/db/${DB}/pull?after=${after}&limit=10000`, { headers: { authorization: `Bearer ${reader}` } });
      const { decode } = await import("../protocol/codec.ts");
      const body = decode(new Uint8Array(await page.arrayBuffer())) as { entries: typeof log; more: boolean };
      log.push(...body.entries.map(({ seq, client, cseq }) => ({ seq, client, cseq })));
      if (!body.more) break;
      after = log.at(-1)!.seq;
    }
    if (log.some((e, i) => e.seq !== i + 1)) failures.push("log seq is not gapless from 1");
    const data = log.filter((e) => e.cseq > 0); // cseq 0: schema entries
    const keys = new Set(data.map((e) => `${e.client}/${e.cseq}`));
    if (keys.size !== data.length) failures.push(`${data.length - keys.size} duplicate (client, cseq) in the log`);
    for (const w of workers) {
      const mine = data.filter((e) => e.client === w.client).map((e) => e.cseq);
      const expected = w.committed.map((_, i) => i + 1);
      if (JSON.stringify(mine) !== JSON.stringify(expected)) {
        failures.push(`${w.client}: committed ${w.committed.length} transactions, the log holds cseqs ${mine.length > 10 ? `${mine.length} entries` : JSON.stringify(mine)}`);
      }
    }

    // Convergence, and no committed write lost.
    const fresh = await openReplica({ url, db: DB, token: reader, clientId: "fresh", schema: SCHEMA, driver: "wasm" });
    await fresh.sync();
    const dump = async (r: Replica) => JSON.stringify([await r.query("SELECT * FROM todo ORDER BY id"), await r.query("SELECT id FROM journal ORDER BY id")]);
    const expected = await dump(fresh);
    const journal = new Set((await fresh.query<{ id: string }>("SELECT id FROM journal")).map((r) => r.id));
    await fresh.close();
    let diverged = 0;
    for (const w of workers) {
      if ((await dump(w.replica)) !== expected) diverged++;
      if (w.replica.status().pending !== 0) failures.push(`${w.client}: ${w.replica.status().pending} entries still pending`);
      const lost = w.committed.filter((j) => !journal.has(j));
      if (lost.length > 0) failures.push(`${w.client}: ${lost.length} committed transactions missing from the replayed log`);
    }
    if (diverged > 0) failures.push(`${diverged} replicas differ from a fresh replay of the log`);
    for (const w of workers) await w.replica.close();

    // Memory.
    clearInterval(sampler);
    sample();
    const at10 = samples.find((s) => s.t >= Math.min(10, SECONDS / 2)) ?? samples[0]!;
    const peak = samples.reduce((m, s) => (s.kib > m.kib ? s : m));
    const last = samples.at(-1)!;
    const mb = (kib: number) => `${(kib / 1024).toFixed(1)} MB`;
    if (last.kib > 2 * at10.kib) failures.push(`relay RSS grew from ${mb(at10.kib)} at ${at10.t.toFixed(0)} s to ${mb(last.kib)}`);

    await heap.current();
    const loadHeap = heap.peak();

    // The hostile half: gzip bombs and stalled subscribers (scripts/load-hostile.ts).
    console.error(`load: replicas done; ${failures.length} failures so far`);
    const hostile = await hostileChecks();
    failures.push(...hostile.failures);
    await heap.current();
    for (const [what, peak] of [["the replicas' load", heap.peak()], ["the hostile checks", hostile.heapPeak]] as const) {
      if (peak >= HEAP_LIMIT) failures.push(`the relay's JS heap peaked at ${mb(peak / 1024)} during ${what} (limit ${mb(HEAP_LIMIT / 1024)})`);
    }

    const every10 = samples.filter((s, i) => i === 0 || Math.floor(s.t / 10) > Math.floor(samples[i - 1]!.t / 10));
    const writes = workers.reduce((s, w) => s + w.committed.length, 0);
    const syncs = workers.reduce((s, w) => s + w.syncs, 0);
    console.log(
      [
        `load: ${REPLICAS} replicas, ${loadSeconds.toFixed(0)} s`,
        `  committed transactions  ${writes} (${(writes / loadSeconds).toFixed(1)}/s), syncs ${syncs}, log entries ${log.length}`,
        `  relay RSS (workerd)     first ${mb(samples[0]?.kib ?? 0)}, at ${at10.t.toFixed(0)} s ${mb(at10.kib)}, peak ${mb(peak.kib)} at ${peak.t.toFixed(0)} s, last ${mb(last.kib)}`,
        `  relay RSS every 10 s    ${every10.map((s) => (s.kib / 1024).toFixed(0)).join(" ")} MB`,
        `  wrangler's dev proxy    ${every10.map((s) => (s.proxy / 1024).toFixed(0)).join(" ")} MB (not checked: not part of the relay)`,
        `  converged               ${diverged === 0 ? `yes, ${REPLICAS} replicas + a fresh replay` : `NO (${diverged} differ)`}`,
        `  relay JS heap (peak)    ${mb(loadHeap / 1024)} during the replicas' load, ${mb(hostile.heapPeak / 1024)} during the hostile checks (limit ${mb(HEAP_LIMIT / 1024)})`,
        ...hostile.report,
        failures.length === 0 ? "  OK" : `  FAILED:\n${failures.slice(0, 20).map((f) => `    - ${f}`).join("\n")}`,
      ].join("\n"),
    );
    return failures.length === 0;
  } finally {
    clearInterval(sampler);
    heap.stop();
    inspector.close();
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once("exit", r)));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
