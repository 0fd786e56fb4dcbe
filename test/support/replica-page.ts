/**
 * The page of test/browser-crash.test.ts and browser-batch.test.ts (bundled
 * there with esbuild): a browser replica on OPFS, written in bursts, its
 * database worker stopped at arbitrary points, the messages to and from it
 * recorded. Every burst transaction inserts ROWS rows of one `tx` into
 * `item` and adds ROWS to `total.n`, so a half-applied one shows as a short
 * group or a total that disagrees with the rows.
 */
import { openReplica, type BrowserReplica } from "../../client/browser/index.ts";

export const ROWS = 5;
export const CRASH_SCHEMA = [
  "CREATE TABLE IF NOT EXISTS item(tx INTEGER NOT NULL, k INTEGER NOT NULL, v TEXT, PRIMARY KEY (tx, k)) WITHOUT ROWID",
  "CREATE TABLE IF NOT EXISTS total(id TEXT PRIMARY KEY, n INTEGER NOT NULL)",
];

/** What the test reads after a restart. */
export interface CrashState {
  /** Rows per `tx` present. */
  groups: { tx: number; c: number }[];
  total: number;
  /** Rows in the outbox table itself, and what status() says. */
  outbox: number;
  pending: number;
  cursor: number;
  journal: unknown;
  locking: unknown;
  synchronous: unknown;
  integrity: unknown;
  owner: boolean;
}

let replica: BrowserReplica | undefined;

/** Calls sent to the worker (their methods), and whether each result carried a status, in order. */
export interface Traffic {
  calls: string[];
  results: { id: number; status: boolean }[];
}
let traffic: Traffic = { calls: [], results: [] };
/** Called as a commit (txEnd) goes to the worker. */
let onCommit: (() => void) | undefined;
function record(w: Worker): Worker {
  const post = w.postMessage.bind(w);
  w.postMessage = (m: { t: string; method?: string }) => {
    if (m.t === "call") traffic.calls.push(m.method!);
    post(m);
    if (m.method === "txEnd") onCommit?.();
  };
  w.addEventListener("message", (e: MessageEvent<{ t: string; id: number; status?: unknown }>) => {
    if (e.data.t === "result") traffic.results.push({ id: e.data.id, status: e.data.status !== undefined });
  });
  return w;
}
/** The traffic since the last call. */
function takeTraffic(): Traffic {
  const t = traffic;
  traffic = { calls: [], results: [] };
  return t;
}
let worker: Worker | undefined;
/** Transactions whose commit this page was told of (their transaction() resolved). */
let acked: number[] = [];
let failed: string[] = [];

async function open(o: { db: string; token: string; live?: boolean }): Promise<CrashState> {
  replica = await openReplica({
    url: location.origin,
    db: o.db,
    token: o.token,
    live: o.live ?? false,
    path: "crash.sqlite3",
    schema: CRASH_SCHEMA,
    backoff: { baseMs: 5, capMs: 50 },
    worker: () => record((worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" }))),
    wasmUrl: new URL("./sqlite3.wasm", location.href).href,
  });
  await replica.exec("INSERT OR IGNORE INTO total VALUES ('all', 0)");
  return state();
}

/** Transactions from..from+count-1, one after the other, in the background; see `acked`. */
function burst(o: { from: number; count: number }): void {
  const r = replica!;
  acked = [];
  failed = [];
  void (async () => {
    for (let t = o.from; t < o.from + o.count; t++) {
      try {
        await r.transaction(async (tx) => {
          // Issued without waiting for each other: they reach the worker in order.
          const writes = [];
          for (let k = 0; k < ROWS; k++) writes.push(tx.exec("INSERT INTO item VALUES (?, ?, ?)", [t, k, `${t}:${k}:${"x".repeat(20_000)}`]));
          writes.push(tx.exec("UPDATE total SET n = n + ? WHERE id = 'all'", [ROWS]));
          await Promise.all(writes);
        });
        acked.push(t);
      } catch (e) {
        failed.push(String(e));
        return;
      }
    }
  })();
}

/** A sync in the background (its outcome does not matter: the worker is about to stop). */
function syncInBackground(): void {
  replica!.sync().catch(() => undefined);
}

/** Once `after` transactions of the burst were acknowledged: those acknowledged so far. */
async function waitAcked(o: { after: number }): Promise<number[]> {
  while (acked.length < o.after && failed.length === 0) await new Promise((r) => setTimeout(r, 0));
  if (failed.length > 0) throw new Error(`the burst failed: ${failed.join("; ")}`);
  return [...acked];
}

/**
 * Stop the database worker once `after` transactions were acknowledged, as a
 * crash would: within `jitterMs`, or (`atCommit`) that long after the next
 * commit was sent, when the worker is likely writing it. Resolves what was
 * acknowledged.
 */
async function kill(o: { after: number; jitterMs: number; atCommit?: boolean }): Promise<number[]> {
  await waitAcked(o);
  if (o.atCommit) await new Promise<void>((r) => (onCommit = r));
  onCommit = undefined;
  await new Promise((r) => setTimeout(r, Math.random() * o.jitterMs));
  const seen = [...acked];
  worker!.terminate();
  replica = undefined;
  return seen;
}

async function state(): Promise<CrashState> {
  const r = replica!;
  const one = async (sql: string) => Object.values((await r.query(sql))[0] ?? {})[0];
  return {
    groups: await r.query<{ tx: number; c: number }>("SELECT tx, count(*) AS c FROM item GROUP BY tx ORDER BY tx"),
    total: Number(await one("SELECT n FROM total WHERE id = 'all'")),
    outbox: Number(await one("SELECT count(*) FROM _relay_outbox")),
    pending: r.status().pending,
    cursor: r.status().cursor,
    journal: await one("PRAGMA journal_mode"),
    locking: await one("PRAGMA locking_mode"),
    synchronous: await one("PRAGMA synchronous"),
    integrity: await one("PRAGMA integrity_check"),
    owner: r.status().owner,
  };
}

/** Wait until this tab's worker owns the database (the owner tab went away), then read it. */
async function takeOver(): Promise<CrashState> {
  const r = replica!;
  while (!r.status().owner) await new Promise((resolve) => setTimeout(resolve, 10));
  return state();
}

async function syncAll(): Promise<CrashState> {
  const r = replica!;
  let ev = await r.sync();
  while (ev.cursor < ev.head || r.status().pending > 0) ev = await r.sync();
  return state();
}

async function close(): Promise<void> {
  await replica?.close();
  replica = undefined;
}

// The test imports this file's constants in Node too.
if (typeof document !== "undefined") {
  Object.assign(globalThis, { crash: { open, replica: () => replica, takeTraffic, burst, syncInBackground, waitAcked, kill, state, takeOver, syncAll, close } });
  document.body.dataset.ready = "1";
}
