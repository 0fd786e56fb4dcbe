/**
 * `npm run bench [-- --quick] [-- --only w1,w2] [-- --runs 5] [-- --cpu-prof]`
 *
 * Starts the relay (workerd via Miniflare) in its own process, runs the
 * workloads of issue 6 with each replica in its own process, prints a table
 * and writes bench/results.json. Every figure is the median of `runs` runs
 * (default 3) with min–max. See README "Benchmarks".
 *
 * Also: --drivers node,wasm; --w1 / --w2 with a list of N; --out FILE;
 * BENCH_DEBUG=1 prints how W2's latency moves through each run; --w2-stages
 * times each W2 update at every stage of its path (stages.ts) and prints them;
 * --w2-rate R paces W2's writer at R updates a second.
 */
import { w5, w5Report, type W5Result } from "./w5.ts";
import { fork, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { signToken } from "../protocol/token.ts";
import { freePort, LOCAL_SECRET } from "../scripts/local-relay.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import type { Job } from "./child.ts";
import { W2_POINT_WATCHES, type W2Watch } from "./rows.ts";
import { cpuMs, findByName, machine, memory, resetPeak, schedMs } from "./proc.ts";
import { connectInspector, profileRelay, sampleHeap, type HeapSampler } from "./inspector.ts";
import { figure, fmt, percentile, table, type Figure } from "./stats.ts";
import { stages as w2Stages, type StageInput } from "./stages.ts";
import { browserBench, buildBrowserBench, journalBench, type W1Sample, type W2Sample } from "./browser.ts";

const here = (f: string) => fileURLToPath(new URL(f, import.meta.url));
const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    runs: { type: "string" },
    only: { type: "string" },
    drivers: { type: "string", default: "node,wasm" },
    "cpu-prof": { type: "boolean", default: false },
    out: { type: "string", default: here("results.json") },
    /** Override W1's N list, e.g. --w1 100000 (while profiling). */
    w1: { type: "string" },
    w2: { type: "string" },
    "w2-stages": { type: "boolean", default: false },
    /** W2 paced: A writes this many updates a second (yielding between writes) instead of back to back. */
    "w2-rate": { type: "string" },
    "w1-big": { type: "string" },
    "browser-w1": { type: "string" },
    "browser-w2": { type: "string" },
    /** "memory": the Chromium replicas off OPFS (to tell storage apart from the rest). */
    "browser-storage": { type: "string", default: "auto" },
  },
});
const quick = args.quick!;
const RUNS = Number(args.runs ?? 3);
const only = new Set((args.only ?? `limit,w1,w2,browser,browser-journal,${quick ? "" : "w1-big,"}w3,w4,w5,drivers`).split(","));
const drivers = args.drivers!.split(",") as DriverKind[];
const profDir = here("profiles");
const childArgv = args["cpu-prof"] ? (mkdirSync(profDir, { recursive: true }), ["--cpu-prof", `--cpu-prof-dir=${profDir}`]) : [];

const W1_N = args.w1 ? args.w1.split(",").map(Number) : quick ? [1_000, 10_000] : [1_000, 10_000, 100_000];
const W1_BIG = Number(args["w1-big"] ?? 1_000_000);
/** The Chromium part's sizes: the largest of W1's and W2's (each run is a fresh browser profile). */
const BROWSER_W1 = args["browser-w1"] ? args["browser-w1"].split(",").map(Number) : [Math.max(...W1_N)];
const W2_N = args.w2 ? args.w2.split(",").map(Number) : quick ? [1_000] : [1_000, 10_000];
/** 1,000 at most by default: on OPFS a browser write costs ~50 ms here (see the browser-journal part), 10,000 would take minutes a run. */
const BROWSER_W2 = args["browser-w2"] ? args["browser-w2"].split(",").map(Number) : [Math.min(...W2_N)];
const W3_MS = quick ? 2_000 : 10_000;
const W3_WRITERS = 20;
/**
 * W3 modes. "batched": each writer's app commits 1,000 single-row
 * transactions a second (20,000/s offered in all) and the writer keeps one
 * push in flight carrying what was committed meanwhile, as the replica's
 * outbox flush does. "saturated": 5,000 a second each, more than one Durable
 * Object takes, so it shows the ceiling. "single": one entry per push, one
 * push in flight per writer, no batching by the client at all.
 */
const W3_MODES: { name: string; mode: "batched" | "single"; rate: number }[] = [
  { name: "batched", mode: "batched", rate: 1_000 },
  ...(quick ? [] : [{ name: "saturated", mode: "batched" as const, rate: 5_000 }]),
  { name: "single", mode: "single", rate: 0 },
];
const W4_ENTRIES = quick ? 2_000 : 10_000;

const log = (s: string) => process.stderr.write(`${s}\n`);
const token = (sub: string, db: string) => signToken({ db, role: "write", sub }, LOCAL_SECRET);
const started = Date.now();

// ---------------------------------------------------------------- processes

class Child {
  readonly proc: ChildProcess;
  private readonly queue: unknown[] = [];
  private waiting: ((m: unknown) => void) | undefined;
  private exitError: Error | undefined;
  constructor(file: string, execArgv: string[] = childArgv, env: Record<string, string> = {}) {
    this.proc = fork(here(file), [], { execArgv, env: { ...process.env, ...env }, serialization: "advanced", stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.proc.on("message", (m) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(m);
      } else this.queue.push(m);
    });
    this.proc.on("exit", (code) => {
      this.exitError = new Error(`${file} exited with ${code}`);
      this.waiting?.({ stage: "error", error: this.exitError.message });
    });
  }
  send(m: unknown): void {
    this.proc.send(m as never);
  }
  next<T = Record<string, unknown>>(): Promise<T> {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift() as T);
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve) => (this.waiting = resolve as (m: unknown) => void));
  }
  /** The next message must be stage `stage`; an error stage throws. */
  async expect<T = Record<string, unknown>>(stage: string): Promise<T> {
    const m = await this.next<{ stage: string; error?: string }>();
    if (m.stage === "error") throw new Error(m.error);
    if (m.stage !== stage) throw new Error(`expected ${stage}, got ${m.stage}`);
    return m as T;
  }
}

/** Fork a client process, give it a job, wait for its result. */
async function job<T>(j: Job): Promise<T & { peakRss: number; cpuMs: number }> {
  const c = new Child("child.ts");
  c.send(j);
  return (await c.expect<{ result: T & { peakRss: number; cpuMs: number } }>("done")).result;
}

interface Relay {
  url: string;
  host: Child;
  /** workerd processes (the relay itself; the Node host only supervises). */
  pids: number[];
  /** The relay's JS heap, through workerd's inspector. */
  heap: HeapSampler;
  stop(): Promise<void>;
}

async function startRelay(assets?: string): Promise<Relay> {
  // The inspector is always on: the relay's JS heap is reported (and profiled with --cpu-prof).
  const inspectorPort = await freePort();
  const host = new Child("relay-host.ts", [], { INSPECTOR_PORT: String(inspectorPort), ...(assets ? { RELAY_ASSETS: assets } : {}) });
  const { url } = await host.next<{ url: string }>();
  const pids = findByName(host.proc.pid!, "workerd");
  if (pids.length === 0) throw new Error("no workerd process found under the relay host");
  const inspector = await connectInspector(inspectorPort);
  const profiler = args["cpu-prof"] ? await profileRelay(inspector) : undefined;
  const heap = sampleHeap(inspector);
  return {
    url,
    host,
    pids,
    heap,
    stop: async () => {
      heap.stop();
      if (profiler) writeFileSync(`${profDir}/relay-${Date.now()}.cpuprofile`, JSON.stringify(await profiler.stop()));
      inspector.close();
      await new Promise<void>((resolve) => {
        host.proc.once("exit", () => resolve());
        host.send("stop");
      });
    },
  };
}

/** Relay-side measurement around one run: peak RSS (VmHWM reset first), peak JS heap (sampled every 100 ms) and CPU. */
async function onRelay<T>(relay: Relay, fn: () => Promise<T>): Promise<T & { relayPeakRss: number; relayPeakHeap: number; relayCpuMs: number }> {
  resetPeak(relay.pids);
  relay.heap.reset();
  await relay.heap.current();
  const cpu0 = cpuMs(relay.pids);
  const r = await fn();
  await relay.heap.current();
  return { ...r, relayPeakRss: memory(relay.pids).peak, relayPeakHeap: relay.heap.peak(), relayCpuMs: cpuMs(relay.pids) - cpu0 };
}

let dbCounter = 0;
const freshDb = (name: string) => `${name}-${Date.now().toString(36)}-${++dbCounter}`;

// ---------------------------------------------------------------- workloads

type Runs<T> = { [K in keyof T]: Figure };
function collect<T extends Record<string, number>>(samples: T[]): Runs<T> {
  const out = {} as Runs<T>;
  for (const k of Object.keys(samples[0]!) as (keyof T)[]) out[k] = figure(samples.map((s) => s[k]!));
  return out;
}

async function limitBench() {
  const out: Record<number, Runs<{ totalMs: number; captureMs: number; applyMs: number; bytesPerRow: number }>> = {};
  for (const n of W1_N) {
    const samples = [];
    // Cheap, and every W1 ratio divides by it: two more runs than the rest.
    for (let r = 0; r < RUNS + 2; r++) {
      const res = await job<{ totalMs: number; captureMs: number; applyMs: number; changesetBytes: number }>({ kind: "limit", n });
      samples.push({ totalMs: res.totalMs, captureMs: res.captureMs, applyMs: res.applyMs, bytesPerRow: res.changesetBytes / n });
    }
    out[n] = collect(samples);
    log(`limit N=${n}: ${fmt(out[n].totalMs, 1)} ms`);
  }
  return out;
}

async function w1Bench(relay: Relay, driver: DriverKind) {
  const out: Record<number, ReturnType<typeof collect>> = {};
  for (const n of W1_N) {
    const samples = [];
    for (let r = 0; r < RUNS; r++) {
      const db = freshDb(`w1-${driver}-${n}`);
      const res = await onRelay(relay, async () => {
        const a = await job<{ writeMs: number; pushMs: number; wire: { up: number; down: number }; error?: string }>({ kind: "w1-write", url: relay.url, db, token: await token("a", db), driver, n });
        if (a.error) throw new Error(`W1 ${driver} N=${n}: ${a.error}`);
        const b = await job<{ syncMs: number; wire: { up: number; down: number } }>({ kind: "catch-up", url: relay.url, db, token: await token("b", db), driver, rows: n });
        return { a, b };
      });
      const { a, b } = res;
      const up = a.wire.up + b.wire.up;
      const down = a.wire.down + b.wire.down;
      samples.push({
        writeMs: a.writeMs,
        pushMs: a.pushMs,
        pullMs: b.syncMs,
        totalMs: a.writeMs + a.pushMs + b.syncMs,
        upBytes: up,
        downBytes: down,
        bytesPerRow: (up + down) / n,
        pushBytesPerRow: a.wire.up / n,
        pullBytesPerRow: b.wire.down / n,
        clientPeakRss: Math.max(a.peakRss, b.peakRss),
        clientCpuMs: a.cpuMs + b.cpuMs,
        relayPeakRss: res.relayPeakRss,
        relayPeakHeap: res.relayPeakHeap,
        relayCpuMs: res.relayCpuMs,
      });
    }
    out[n] = collect(samples);
    log(`W1 ${driver} N=${n}: total ${fmt(out[n].totalMs!)} ms, ${fmt(out[n].bytesPerRow!, 1)} B/row`);
  }
  return out;
}

/**
 * W1 at W1_BIG rows (default 1,000,000), one run per driver: one transaction
 * that large goes up and comes down in parts (issue 18). A refusal is
 * reported with what it cost, instead of ending the bench. `limitMs`: the
 * in-process limit at the same size (one run).
 */
async function w1BigBench(relay: Relay, driver: DriverKind, limitMs: number) {
  const db = freshDb(`w1big-${driver}`);
  const res = await onRelay(relay, async () => {
    const a = await job<{ writeMs: number; pushMs: number; pendingAfter: number; error?: string; wire: { up: number; down: number } }>({ kind: "w1-write", url: relay.url, db, token: await token("a", db), driver, n: W1_BIG });
    if (a.error) return { ...a, pullMs: NaN, totalMs: NaN, clientPeakRss: a.peakRss };
    const b = await job<{ syncMs: number; wire: { up: number; down: number } }>({ kind: "catch-up", url: relay.url, db, token: await token("b", db), driver, rows: W1_BIG });
    return { ...a, pullMs: b.syncMs, totalMs: a.writeMs + a.pushMs + b.syncMs, clientPeakRss: Math.max(a.peakRss, b.peakRss) };
  });
  log(`W1 ${driver} N=${W1_BIG}: ${res.error ? `push failed after ${res.pushMs.toFixed(0)} ms (write ${res.writeMs.toFixed(0)} ms), ${res.pendingAfter} pending: ${res.error}` : `total ${res.totalMs.toFixed(0)} ms`}`);
  return { n: W1_BIG, writeMs: res.writeMs, pushMs: res.pushMs, pullMs: res.pullMs, totalMs: res.totalMs, limitMs, error: res.error ?? null, pendingAfter: res.pendingAfter, clientPeakRss: res.clientPeakRss, relayPeakRss: res.relayPeakRss };
}

async function w2Run(relay: Relay, driver: DriverKind, n: number, watch?: W2Watch) {
  const db = freshDb(`w2-${driver}-${n}`);
  return onRelay(relay, async () => {
    const a = new Child("child.ts");
    const traced = args["w2-stages"] && !watch;
    a.send({ kind: "w2-writer", url: relay.url, db, token: await token("a", db), driver, n, stages: traced, ...(args["w2-rate"] ? { rate: Number(args["w2-rate"]) } : {}) } satisfies Job);
    const { seedHead } = await a.expect<{ seedHead: number }>("seeded");
    const b = new Child("child.ts");
    b.send({ kind: "w2-reader", url: relay.url, db, token: await token("b", db), driver, target: seedHead + n, ...(watch ? { watch, n } : {}), stages: traced } satisfies Job);
    await b.expect("ready");
    const relaySched0 = schedMs(relay.pids);
    a.send("go");
    const [ar, br] = await Promise.all([
      a.expect<{ result: { start: number; resolved: number[]; wire: { up: number; down: number }; peakRss: number; cpuMs: number; traced?: StageInput["a"] & { execStart: number[]; runCpuMs: number; runWaitMs: number } } }>("done"),
      b.expect<{ result: { events: number[]; seen: number[]; runCpuMs: number; wire: { up: number; down: number }; peakRss: number; cpuMs: number; traced?: StageInput["b"] & { runWaitMs: number } } }>("done"),
    ]);
    const relaySched = schedMs(relay.pids);
    const { start, resolved } = ar.result;
    const ev = br.result.events;
    // Update k is log entry seedHead + k; B sees it at the first remote change whose cursor reaches it.
    const latencies: number[] = [];
    let e = 0;
    for (let k = 1; k <= n; k++) {
      while (e < ev.length && ev[e]! < seedHead + k) e += 2;
      if (e >= ev.length) throw new Error(`W2: B never saw update ${k}`);
      latencies.push(ev[e + 1]! - resolved[k]!);
    }
    if (process.env.BENCH_DEBUG) {
      const tenth = Math.ceil(n / 10);
      log(`  latency by tenth of the run (ms): ${Array.from({ length: 10 }, (_, i) => percentile(latencies.slice(i * tenth, (i + 1) * tenth), 50).toFixed(1)).join(" ")}`);
      log(`  B change events: ${ev.length / 2} for ${n} updates; A exec loop ${(resolved[n]! - start).toFixed(0)} ms`);
      log(`  first 20 latencies: ${latencies.slice(0, 20).map((x) => x.toFixed(1)).join(" ")}`);
    }
    let stageFigures: Record<string, number> = {};
    if (ar.result.traced && br.result.traced) {
      const a = ar.result.traced;
      const b = br.result.traced;
      stageFigures = {
        ...w2Stages({ cseq0: a.sent[0]! - 1, seq0: seedHead, n, execStart: a.execStart, resolved, a, b, events: ev }),
        // Run-queue waits (ready to run, no core free) and CPU during the run: A's and B's main (JavaScript) thread, all of workerd's.
        aWaitMs: a.runWaitMs,
        bWaitMs: b.runWaitMs,
        relayWaitMs: relaySched.wait - relaySched0.wait,
        aRunCpuMs: a.runCpuMs,
        relayRunCpuMs: relaySched.cpu - relaySched0.cpu,
      };
      const st = (name: string) => `${name} ${stageFigures[`${name}P50`]!.toFixed(2)}/${stageFigures[`${name}P99`]!.toFixed(2)}`;
      log(`  stages p50/p99 ms: ${["write", "sent", "relay", "b", "ack", "total", "measured"].map(st).join(", ")}; write mean ${(stageFigures.writeMean! * 1000).toFixed(0)} µs, between writes ${(stageFigures.gapMean! * 1000).toFixed(0)} µs; frames A→ ${stageFigures.pushFrames} →B ${stageFigures.bFrames}; during the run, CPU ms A ${stageFigures.aRunCpuMs!.toFixed(0)} B ${br.result.runCpuMs.toFixed(0)} relay ${stageFigures.relayRunCpuMs!.toFixed(0)}, run-queue wait ms A ${stageFigures.aWaitMs!.toFixed(0)} B ${stageFigures.bWaitMs!.toFixed(0)} relay ${stageFigures.relayWaitMs!.toFixed(0)}`);
    }
    // What a watch adds: from the "change" event that included update k to the callback of row k's watch.
    const added: number[] = [];
    const seen = br.result.seen;
    for (let i = 0; i < seen.length; i += 2) {
      const k = seen[i]!;
      let j = 0;
      while (ev[j]! < seedHead + k) j += 2;
      added.push(seen[i + 1]! - ev[j + 1]!);
    }
    const lastSeen = Math.max(ev[ev.length - 1]!, seen.length > 0 ? Math.max(...seen.filter((_, i) => i % 2 === 1)) : 0);
    const totalMs = lastSeen - start;
    const up = ar.result.wire.up + br.result.wire.up;
    const down = ar.result.wire.down + br.result.wire.down;
    return {
      totalMs,
      updatesPerSec: n / (totalMs / 1000),
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: Math.max(...latencies),
      // The first updates run on cold code in three processes (JIT) and own
      // the p99 of a short run; this is the p99 of the remaining 90%.
      p99Warm: percentile(latencies.slice(Math.ceil(n / 10)), 99),
      bytesPerUpdate: (up + down) / n,
      clientPeakRss: Math.max(ar.result.peakRss, br.result.peakRss),
      clientCpuMs: ar.result.cpuMs + br.result.cpuMs,
      aCpuMs: ar.result.cpuMs,
      bCpuMs: br.result.cpuMs,
      bRunCpuMs: br.result.runCpuMs,
      ...(added.length > 0 ? { watchAddedP50: percentile(added, 50), watchAddedP99: percentile(added, 99) } : {}),
      ...stageFigures,
    };
  });
}

/** W2 again with B watching: point watches on updated rows (latency added over "change"), then 100 watches on other tables (cost in updates/s). */
async function w2WatchBench(relay: Relay, driver: DriverKind) {
  const out: Record<string, ReturnType<typeof collect>> = {};
  const n = W2_N[0]!;
  const modes = ["none", "point", "unrelated"] as const;
  const samples: Record<string, Awaited<ReturnType<typeof w2Run>>[]> = { none: [], point: [], unrelated: [] };
  // Modes take turns, so a change in the machine's load falls on all of them alike.
  for (let r = 0; r < RUNS; r++) for (const mode of modes) samples[mode]!.push(await w2Run(relay, driver, n, mode === "none" ? undefined : mode));
  for (const mode of modes) {
    const f = (out[mode] = collect(samples[mode]!));
    log(`W2 watch ${driver} N=${n} ${mode}: ${fmt(f.updatesPerSec!)} updates/s, B CPU during the run ${fmt(f.bRunCpuMs!)} ms${f.watchAddedP50 ? `, watch adds p50 ${fmt(f.watchAddedP50, 2)} p99 ${fmt(f.watchAddedP99!, 2)} ms` : ""}`);
  }
  return out;
}

async function w2Bench(relay: Relay, driver: DriverKind) {
  const out: Record<number, ReturnType<typeof collect>> = {};
  for (const n of W2_N) {
    const samples = [];
    for (let r = 0; r < RUNS; r++) samples.push(await w2Run(relay, driver, n));
    out[n] = collect(samples);
    log(`W2 ${driver} N=${n}: ${fmt(out[n].updatesPerSec!)} updates/s, p50 ${fmt(out[n].p50!, 1)} p99 ${fmt(out[n].p99!, 1)} max ${fmt(out[n].max!, 1)} ms; CPU ms A ${fmt(out[n].aCpuMs!)} B ${fmt(out[n].bCpuMs!)} relay ${fmt(out[n].relayCpuMs!)}`);
  }
  return out;
}

async function w3Bench(relay: Relay) {
  const out: Record<string, { figures: Record<string, Figure>; gapless: boolean; offeredPerSec: number | null }> = {};
  for (const { name, mode, rate } of W3_MODES) {
    const samples = [];
    let gapless = true;
    for (let r = 0; r < RUNS; r++) {
      const db = freshDb(`w3-${name}`);
      const tokens = await Promise.all(Array.from({ length: W3_WRITERS }, (_, w) => token(`w3-${w}`, db)));
      const res = await onRelay(relay, () =>
        job<{ acceptedPerSec: number; pushesPerSec: number; meanBatch: number; rttP50: number; rttP99: number; refused: number; gapless: boolean }>({ kind: "w3", url: relay.url, db, tokens, ms: W3_MS, mode, rate }),
      );
      gapless &&= res.gapless;
      samples.push({ acceptedPerSec: res.acceptedPerSec, pushesPerSec: res.pushesPerSec, meanBatch: res.meanBatch, rttP50: res.rttP50, rttP99: res.rttP99, refused: res.refused, relayCpuMs: res.relayCpuMs, relayPeakRss: res.relayPeakRss, relayPeakHeap: res.relayPeakHeap });
    }
    const figures = collect(samples);
    out[name] = { figures, gapless, offeredPerSec: mode === "batched" ? rate * W3_WRITERS : null };
    log(`W3 ${name}: ${fmt(figures.acceptedPerSec)} entries/s, batch ${fmt(figures.meanBatch, 1)}, gapless ${gapless}`);
  }
  return out;
}

async function w4Bench(relay: Relay) {
  const db = freshDb("w4");
  const seed = await job<{ rows: number; head: number }>({ kind: "w4-seed", url: relay.url, db, token: await token("seed", db), entries: W4_ENTRIES });
  // The log opens with the schema's entry (seq 1), then the workload's entries.
  if (seed.head !== W4_ENTRIES + 1) throw new Error(`W4 seed: head ${seed.head}, expected ${W4_ENTRIES} entries after the schema entry`);
  const out: Record<string, ReturnType<typeof collect>> = {};
  for (const driver of drivers) {
    const samples = [];
    for (let r = 0; r < RUNS; r++) {
      const res = await onRelay(relay, async () =>
        job<{ syncMs: number; wire: { up: number; down: number } }>({ kind: "catch-up", url: relay.url, db, token: await token(`fresh-${r}`, db), driver, rows: seed.rows }),
      );
      samples.push({ syncMs: res.syncMs, downBytes: res.wire.down, upBytes: res.wire.up, clientPeakRss: res.peakRss, relayPeakRss: res.relayPeakRss, relayPeakHeap: res.relayPeakHeap, relayCpuMs: res.relayCpuMs });
    }
    out[driver] = collect(samples);
    log(`W4 ${driver}: ${fmt(out[driver].syncMs!)} ms, ${fmt(out[driver].downBytes!, 0)} bytes down`);
  }
  return { entries: W4_ENTRIES, rows: seed.rows, ...out };
}

/** bench/drivers.ts (the client's local paths, no relay) in its own process; its table as printed. */
async function driversBench(): Promise<string> {
  const argv = ["--runs", String(Math.max(RUNS, 3)), "--drivers", drivers.join(","), ...(quick ? ["--n", "10000", "--updates", "1000"] : [])];
  const child = fork(here("drivers.ts"), argv, { stdio: ["ignore", "pipe", "inherit", "ipc"] });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`bench/drivers.ts exited with ${code}`);
  return out.trim();
}

// ---------------------------------------------------------------- main

const before = machine();
log(`bench: ${quick ? "quick" : "full"}, ${RUNS} runs each; ${before.cores} cores (${before.cpu}), load ${before.load1.toFixed(2)} at start`);
const results: Record<string, unknown> = { date: new Date().toISOString(), quick, runs: RUNS, node: process.version, machine: before };

async function withRelay<T>(fn: (relay: Relay) => Promise<T>, assets?: string): Promise<T> {
  const relay = await startRelay(assets);
  try {
    return await fn(relay);
  } finally {
    await relay.stop();
  }
}

if (only.has("limit") || only.has("w1")) results.limit = await limitBench();
if (only.has("w1")) {
  const w1: Record<string, unknown> = {};
  for (const d of drivers) w1[d] = await withRelay((r) => w1Bench(r, d));
  results.w1 = w1;
}
if (only.has("w2")) {
  const w2: Record<string, unknown> = {};
  for (const d of drivers) w2[d] = await withRelay((r) => w2Bench(r, d));
  results.w2 = w2;
  // Traced or paced runs are about the latency path: the watch comparison is left out.
  if (!args["w2-stages"] && !args["w2-rate"]) {
    const w2watch: Record<string, unknown> = {};
    for (const d of drivers) w2watch[d] = await withRelay((r) => w2WatchBench(r, d));
    results.w2watch = w2watch;
  }
}
if (only.has("browser")) {
  const dist = await buildBrowserBench();
  results.browser = await withRelay(
    (r) => browserBench({ url: r.url, w1: BROWSER_W1, w2: BROWSER_W2, runs: RUNS, token, freshDb, log, storage: args["browser-storage"] as "auto" | "memory" }),
    dist,
  );
}
if (only.has("browser-journal")) {
  const dist = await buildBrowserBench();
  results.browserJournal = await withRelay((r) => journalBench(r.url, RUNS), dist);
}
if (only.has("w1-big")) {
  const big: Record<string, unknown> = {};
  const limitMs = (await job<{ totalMs: number }>({ kind: "limit", n: W1_BIG })).totalMs;
  log(`limit N=${W1_BIG}: ${limitMs.toFixed(0)} ms`);
  for (const d of drivers) big[d] = await withRelay((r) => w1BigBench(r, d, limitMs));
  results.w1Big = big;
}
if (only.has("w3")) results.w3 = await withRelay(w3Bench);
if (only.has("drivers")) results.drivers = await driversBench();
if (only.has("w4")) results.w4 = await withRelay(w4Bench);
if (only.has("w5")) {
  const r = await w5(quick ? 5_000 : 50_000);
  results.w5 = r;
  log(`W5: bootstrap ${r.before.ms.toFixed(0)} ms / ${r.before.bytes} B before compaction, ${r.after.ms.toFixed(0)} ms / ${r.after.bytes} B after; state-only ${r.stateOnly.ms.toFixed(0)} ms / ${r.stateOnly.bytes} B`);
}
const after = machine();
results.loadAtEnd = { load1: after.load1, load5: after.load5 };
results.seconds = (Date.now() - started) / 1000;
writeFileSync(args.out!, JSON.stringify(results, null, 2) + "\n");
console.log(report(results));
log(`bench: ${results.seconds} s; load ${before.load1.toFixed(2)} → ${after.load1.toFixed(2)}; wrote ${args.out}`);
process.exit(0);

// ---------------------------------------------------------------- report

function report(res: Record<string, unknown>): string {
  const MB = 1 / (1024 * 1024);
  const out: string[] = [];
  const m = res.machine as ReturnType<typeof machine>;
  out.push(`Machine: ${m.cores} cores (${m.cpu}), ${m.memGiB} GiB, Node ${res.node}; load average ${m.load1.toFixed(2)} at start, ${(res.loadAtEnd as { load1: number }).load1.toFixed(2)} at end. Median of ${res.runs} runs (min–max).`);
  const limit = res.limit as Record<number, Record<string, Figure>> | undefined;
  const w1 = res.w1 as Record<string, Record<number, Record<string, Figure>>> | undefined;
  if (w1 && limit) {
    const rows: string[][] = [];
    for (const n of W1_N) rows.push(["limit", n.toLocaleString("en-US"), "", "", "", fmt(limit[n]!.totalMs, 1), "1.0", `${fmt(limit[n]!.bytesPerRow, 1)} raw`, "", "", "", ""]);
    for (const d of Object.keys(w1)) {
      for (const n of W1_N) {
        const f = w1[d]![n]!;
        const ratio = f.totalMs!.median / limit[n]!.totalMs!.median;
        rows.push([d, n.toLocaleString("en-US"), fmt(f.writeMs), fmt(f.pushMs), fmt(f.pullMs), fmt(f.totalMs), ratio.toFixed(1), `${fmt(f.pushBytesPerRow, 1)} / ${fmt(f.pullBytesPerRow, 1)}`, fmt(f.bytesPerRow, 1), fmt(f.clientPeakRss, 0, MB), fmt(f.relayPeakRss, 0, MB), fmt(f.relayPeakHeap, 0, MB)]);
      }
    }
    out.push("\nW1 bulk: A inserts N rows in one transaction and pushes; fresh B syncs them (ms; wire bytes per row: A's push up / B's pull down, and everything both replicas sent and received)");
    out.push(table(["driver", "N", "A write", "A push", "B pull+apply", "total", "× limit", "wire push / pull", "wire all", "client MB", "relay MB", "relay heap MB"], rows));
  }
  const w2 = res.w2 as Record<string, Record<number, Record<string, Figure>>> | undefined;
  if (w2) {
    const rows: string[][] = [];
    for (const d of Object.keys(w2)) {
      for (const n of W2_N) {
        const f = w2[d]![n]!;
        rows.push([d, n.toLocaleString("en-US"), fmt(f.totalMs), fmt(f.updatesPerSec), fmt(f.p50, 1), fmt(f.p99, 1), fmt(f.max, 1), fmt(f.p99Warm, 1), fmt(f.bytesPerUpdate, 0), fmt(f.clientPeakRss, 0, MB), fmt(f.relayPeakRss, 0, MB), fmt(f.relayPeakHeap, 0, MB)]);
      }
    }
    out.push("\nW2 chatty: N single-row updates on A, live; latency = exec() resolved on A → \"change\" on B (ms)");
    out.push(table(["driver", "N", "total", "updates/s", "p50", "p99", "max", "p99 after first 10%", "wire B/update", "client MB", "relay MB", "relay heap MB"], rows));
  }
  const w2watch = res.w2watch as Record<string, Record<string, Record<string, Figure>>> | undefined;
  if (w2watch) {
    const rows: string[][] = [];
    for (const d of Object.keys(w2watch)) {
      const base = w2watch[d]!["none"]!.updatesPerSec!.median;
      for (const mode of ["none", "point", "unrelated"]) {
        const f = w2watch[d]![mode]!;
        const baseCpu = w2watch[d]!["none"]!.bRunCpuMs!.median;
        rows.push([d, mode, fmt(f.updatesPerSec), `${(((f.updatesPerSec!.median - base) / base) * 100).toFixed(1)}%`, fmt(f.bRunCpuMs), `${(((f.bRunCpuMs!.median - baseCpu) / baseCpu) * 100).toFixed(1)}%`, f.watchAddedP50 ? fmt(f.watchAddedP50, 2) : "", f.watchAddedP99 ? fmt(f.watchAddedP99, 2) : ""]);
      }
    }
    out.push(`\nW2 with watches (N = ${W2_N[0]!.toLocaleString("en-US")}): B also watches ${W2_POINT_WATCHES} updated rows with SELECT * FROM todos WHERE id = ? ("point"), or 100 rows of other tables ("unrelated"); added = "change" on B → the watch's callback (ms)`);
    out.push(table(["driver", "B watches", "updates/s", "vs none", "B CPU ms during the run", "vs none", "added p50", "added p99"], rows));
  }
  const browser = res.browser as { w1: Record<number, W1Sample[]>; w2: Record<number, W2Sample[]>; chromium: string } | undefined;
  if (browser) {
    const col = (xs: { [k: string]: number | string | undefined }[], k: string) => figure(xs.map((x) => x[k] as number));
    const rows: string[][] = [];
    for (const [n, samples] of Object.entries(browser.w1)) {
      const failed = samples.find((x) => x.error);
      const f = (k: keyof W1Sample) => col(samples as never, k);
      const total = f("totalMs");
      const limitMs = limit?.[Number(n)]?.totalMs?.median;
      const wasmMs = w1?.wasm?.[Number(n)]?.totalMs?.median;
      rows.push([Number(n).toLocaleString("en-US"), fmt(f("writeMs")), fmt(f("awaitedMs")), failed ? `fails: ${failed.error}` : fmt(f("pushMs")), fmt(f("pullMs")), fmt(total), limitMs ? (total.median / limitMs).toFixed(1) : "–", wasmMs ? (total.median / wasmMs).toFixed(2) : "–"]);
    }
    out.push(`\nW1 in Chromium ${browser.chromium} (OPFS, profile on disk, replica in its Web Worker; A's tx.exec calls issued in one turn; "awaiting each": a round trip page → worker per call, not in the total), ms`);
    out.push(table(["N", "A write", "A write, awaiting each", "A push", "B pull+apply", "total", "× node limit", "× Node wasm total"], rows));
    const rows2: string[][] = [];
    for (const [n, samples] of Object.entries(browser.w2)) {
      const f = (k: keyof W2Sample) => col(samples as never, k);
      const nodeWasm = w2?.wasm?.[Number(n)]?.updatesPerSec?.median;
      rows2.push([Number(n).toLocaleString("en-US"), fmt(f("totalMs")), fmt(f("updatesPerSec")), fmt(f("p50"), 1), fmt(f("p99"), 1), fmt(f("max"), 1), nodeWasm ? (nodeWasm / f("updatesPerSec").median).toFixed(2) : "–"]);
    }
    out.push("\nW2 in Chromium: A and B two browser profiles, live; latency = exec() resolved in A's page → \"change\" in B's page (ms)");
    out.push(table(["N", "total", "updates/s", "p50", "p99", "max", "Node wasm ÷ browser updates/s"], rows2));
  }
  const big = res.w1Big as Record<string, { n: number; writeMs: number; pushMs: number; pullMs: number; totalMs: number; limitMs?: number; error: string | null; pendingAfter: number; clientPeakRss: number; relayPeakRss: number }> | undefined;
  if (big) {
    const one = (x: number, scale = 1) => (Number.isNaN(x) ? "–" : Math.round(x * scale).toLocaleString("en-US"));
    const times = (b: { totalMs: number; limitMs?: number }) => (b.limitMs && !Number.isNaN(b.totalMs) ? `${(b.totalMs / b.limitMs).toFixed(2)}×` : "–");
    const rows = Object.entries(big).map(([d, b]) => [d, b.n.toLocaleString("en-US"), one(b.writeMs), one(b.pushMs), one(b.pullMs), b.error ? `fails: ${b.error.slice(0, 90)}` : one(b.totalMs), times(b), String(b.pendingAfter), one(b.clientPeakRss, MB), one(b.relayPeakRss, MB)]);
    const limitMs = Object.values(big)[0]?.limitMs;
    out.push(`\nW1 at ${Object.values(big)[0]?.n.toLocaleString("en-US")} rows in one transaction (one run per driver; in-process limit ${limitMs ? one(limitMs) : "–"} ms)`);
    out.push(table(["driver", "N", "A write ms", "A push ms", "B pull+apply ms", "total ms", "× limit", "pending after", "client MB", "relay MB"], rows));
  }
  const journal = res.browserJournal as { setting: string; msPerCommit: number[] }[] | undefined;
  if (journal) {
    out.push("\nOne single-row write transaction on OPFS (opfs-sahpool) in Chromium, sqlite-wasm alone, by journal setting (ms per commit)");
    out.push(table(["setting", "ms per commit"], journal.map((j) => [j.setting, fmt(figure(j.msPerCommit), 2)])));
  }
  if (typeof res.drivers === "string") out.push(`\n${res.drivers}`);
  const w3 = res.w3 as Record<string, { figures: Record<string, Figure>; gapless: boolean; offeredPerSec: number | null }> | undefined;
  if (w3) {
    const rows = Object.entries(w3).map(([mode, { figures: f, gapless, offeredPerSec }]) => [mode, offeredPerSec === null ? "as acked" : offeredPerSec.toLocaleString("en-US"), fmt(f.acceptedPerSec), fmt(f.pushesPerSec), fmt(f.meanBatch, 1), fmt(f.rttP50, 1), fmt(f.rttP99, 1), fmt(f.refused, 0), String(gapless), fmt(f.relayPeakRss, 0, MB), fmt(f.relayPeakHeap, 0, MB)]);
    out.push(`\nW3 fan-in: ${W3_WRITERS} writers push to one Durable Object for ${W3_MS / 1000} s`);
    out.push(table(["mode", "offered/s", "accepted entries/s", "pushes/s", "entries/push", "ack p50 ms", "ack p99 ms", "overloaded", "gapless", "relay MB", "relay heap MB"], rows));
  }
  const w4 = res.w4 as ({ entries: number; rows: number } & Record<string, Record<string, Figure>>) | undefined;
  if (w4) {
    const rows = drivers.filter((d) => w4[d]).map((d) => [d, fmt(w4[d]!.syncMs), fmt(w4[d]!.downBytes, 0, 1 / 1024), fmt(w4[d]!.upBytes, 0, 1 / 1024), fmt(w4[d]!.clientPeakRss, 0, MB), fmt(w4[d]!.relayPeakRss, 0, MB), fmt(w4[d]!.relayPeakHeap, 0, MB)]);
    out.push(`\nW4 bootstrap: a fresh replica catches up on ${w4.entries.toLocaleString("en-US")} entries (${w4.rows.toLocaleString("en-US")} rows)`);
    out.push(table(["driver", "time ms", "KiB down", "KiB up", "client MB", "relay MB", "relay heap MB"], rows));
  }
  if (res.w5) out.push(w5Report(res.w5 as W5Result));
  return out.join("\n");
}
