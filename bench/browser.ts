/**
 * W1 and W2 in Chromium with OPFS, as apps run the replica: the page calls
 * "changeset-relay/browser", whose Web Worker runs sqlite-wasm on the OPFS
 * VFS. The page (bench/browser-page.ts) and the worker are bundled with
 * esbuild the way scripts/build-demo.ts bundles the demo, and served by the
 * relay itself as static assets (same origin, as the demo is). Each replica
 * is its own browser with its own profile on disk, so its own OPFS. Chromium comes from
 * test/support/browser.ts (system, $CHROMIUM_PATH or @sparticuz/chromium).
 *
 * Used by run.ts (`--only browser`); alone: `node bench/browser.ts` builds
 * the bundle (into the temp folder) and prints where it is.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { bundlePage, launchProfile } from "../test/support/browser.ts";

const here = (f: string) => fileURLToPath(new URL(f, import.meta.url));
/** Outside the source tree: tsc checks the JavaScript under it. */
export const BROWSER_DIST = join(tmpdir(), "changeset-relay-bench-browser");

/** Builds the page (index.html), the database worker and sqlite3.wasm into BROWSER_DIST. */
export async function buildBrowserBench(): Promise<string> {
  rmSync(BROWSER_DIST, { recursive: true, force: true });
  mkdirSync(BROWSER_DIST, { recursive: true });
  await bundlePage(here("browser-page.ts"), BROWSER_DIST, [{ in: here("browser-journal.ts"), out: "journal" }]);
  return BROWSER_DIST;
}

export interface BrowserBenchOptions {
  url: string;
  w1: number[];
  w2: number[];
  runs: number;
  token(sub: string, db: string): Promise<string>;
  freshDb(name: string): string;
  log(s: string): void;
  /** "memory": the replicas off OPFS (default: OPFS, as apps run them). */
  storage?: "auto" | "memory";
}

export interface W1Sample {
  /** The rows' tx.exec calls issued in one turn. */
  writeMs: number;
  /** The same write awaiting each tx.exec (rolled back, not pushed). */
  awaitedMs: number;
  pushMs: number;
  pullMs: number;
  totalMs: number;
  error?: string;
}

export interface W2Sample {
  totalMs: number;
  updatesPerSec: number;
  p50: number;
  p99: number;
  max: number;
}

type Call = <T>(page: Page, fn: string, arg: unknown) => Promise<T>;
const call: Call = (page, fn, arg) =>
  page.evaluate(([f, a]) => (globalThis as unknown as { bench: Record<string, (x: unknown) => Promise<unknown>> }).bench[f]!(a), [fn, arg] as const) as never;

/**
 * The bench page in a new browser with its own profile on disk, as people
 * run one (launchProfile: an off-the-record context keeps OPFS in memory
 * behind the browser process, which made each commit cost ~5 ms more here).
 * One replica per profile, so each has its own OPFS.
 */
async function replicaPage(url: string): Promise<{ page: Page; version: string; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "changeset-relay-profile-"));
  const context = await launchProfile(dir);
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("requestfailed", (r) => errors.push(`${r.url()}: ${r.failure()?.errorText}`));
  const close = async () => {
    await context.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const res = await page.goto(`${url}/index.html`);
    if (!res?.ok()) throw new Error(`bench page: HTTP ${res?.status()} ${(await res?.text())?.slice(0, 200)}`);
    await page.waitForSelector("body[data-ready='1']", { state: "attached", timeout: 60_000 }).catch(() => {
      throw new Error(`bench page did not load: ${errors.join("; ")}`);
    });
  } catch (e) {
    await close();
    throw e;
  }
  return { page, version: context.browser()?.version() ?? "?", close };
}

/** Nearest-rank percentile. */
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** ms per single-row commit on OPFS under each journal setting (bench/browser-journal.ts), median of `runs`. */
export async function journalBench(url: string, runs: number): Promise<{ setting: string; msPerCommit: number[] }[]> {
  const all: { setting: string; msPerCommit: number[] }[] = [];
  for (let r = 0; r < runs; r++) {
    const p = await replicaPage(url);
    const res = await p.page.evaluate(() => new Promise<{ out?: { setting: string; msPerCommit: number }[]; error?: string }>((resolve) => {
      const w = new Worker(new URL("./journal.js", location.href), { type: "module" });
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => resolve({ error: e.message });
      w.postMessage({ commits: 200 });
    })).finally(() => p.close());
    if (!res.out) throw new Error(`journal bench: ${res.error}`);
    res.out.forEach((x, i) => (all[i] ??= { setting: x.setting, msPerCommit: [] }).msPerCommit.push(x.msPerCommit));
  }
  return all;
}

export async function browserBench(o: BrowserBenchOptions): Promise<{ w1: Record<number, W1Sample[]>; w2: Record<number, W2Sample[]>; chromium: string }> {
  let version = "?";
  const w1: Record<number, W1Sample[]> = {};
  const w2: Record<number, W2Sample[]> = {};
  for (const n of o.w1) {
    w1[n] = [];
    for (let r = 0; r < o.runs; r++) {
      const db = o.freshDb(`bw1-${n}`);
      const a = await replicaPage(o.url);
      version = a.version;
      const wr = await call<{ writeMs: number; awaitedMs: number; pushMs: number; error?: string }>(a.page, "w1Write", { db, token: await o.token("a", db), n, storage: o.storage }).finally(() => a.close());
      if (wr.error) {
        w1[n].push({ writeMs: wr.writeMs, awaitedMs: wr.awaitedMs, pushMs: wr.pushMs, pullMs: NaN, totalMs: NaN, error: wr.error });
        o.log(`browser W1 N=${n}: push failed: ${wr.error}`);
        break; // it fails the same way every run
      }
      const b = await replicaPage(o.url);
      const cr = await call<{ syncMs: number }>(b.page, "catchUp", { db, token: await o.token("b", db), rows: n, storage: o.storage }).finally(() => b.close());
      w1[n].push({ writeMs: wr.writeMs, awaitedMs: wr.awaitedMs, pushMs: wr.pushMs, pullMs: cr.syncMs, totalMs: wr.writeMs + wr.pushMs + cr.syncMs });
    }
    const totals = w1[n].map((s) => s.totalMs);
    o.log(`browser W1 N=${n}: total ${totals.map((t) => t.toFixed(0)).join(", ")} ms`);
  }
  for (const n of o.w2) {
    w2[n] = [];
    for (let r = 0; r < o.runs; r++) {
      const db = o.freshDb(`bw2-${n}`);
      const a = await replicaPage(o.url);
      const b = await replicaPage(o.url);
      version = a.version;
      try {
        const { seedHead } = await call<{ seedHead: number }>(a.page, "w2Seed", { db, token: await o.token("a", db), n, storage: o.storage });
        await call(b.page, "w2Listen", { db, token: await o.token("b", db), storage: o.storage });
        const target = seedHead + n;
        const [ar, br] = await Promise.all([
          call<{ start: number; resolved: number[] }>(a.page, "w2Write", { n }),
          call<{ events: number[] }>(b.page, "w2Events", { target }),
        ]);
        const ev = br.events;
        const latencies: number[] = [];
        let e = 0;
        for (let k = 1; k <= n; k++) {
          while (e < ev.length && ev[e]! < seedHead + k) e += 2;
          if (e >= ev.length) throw new Error(`browser W2: B never saw update ${k}`);
          latencies.push(ev[e + 1]! - ar.resolved[k]!);
        }
        const totalMs = ev[ev.length - 1]! - ar.start;
        w2[n].push({ totalMs, updatesPerSec: n / (totalMs / 1000), p50: pct(latencies, 50), p99: pct(latencies, 99), max: Math.max(...latencies) });
      } finally {
        await a.close();
        await b.close();
      }
    }
    o.log(`browser W2 N=${n}: ${w2[n].map((s) => `${s.updatesPerSec.toFixed(0)}/s p99 ${s.p99.toFixed(1)}`).join(", ")}`);
  }
  return { w1, w2, chromium: version };
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(`built into ${await buildBrowserBench()}`);
