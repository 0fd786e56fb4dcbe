/**
 * W5 "long history" (issue 15): 1,000 rows, then single-row updates spread
 * over them by one writer; a fresh replica bootstraps before and after
 * compaction, against a database that only ever had the final 1,000 rows.
 * Run by `npm run bench -- --only w5` (bench/run.ts) or on its own:
 * `node bench/w5.ts [--updates N]`.
 *
 * Bytes are what the fresh replica's fetch received, decoded (pull pages
 * and snapshot parts; large pull pages travel gzipped, snapshot parts do not).
 */
import { gzipSync } from "node:zlib";
import { parseArgs } from "node:util";
import { Miniflare } from "miniflare";
import { openReplica, type Replica } from "../client/index.ts";
import { snapshotClient } from "../client/transport/snapshots.ts";
import { signToken } from "../protocol/token.ts";
import { LOCAL_SECRET, relayOptions } from "../scripts/local-relay.ts";

const ROWS = 1_000;

export interface W5Result {
  rows: number;
  updates: number;
  stateBytes: number;
  stateGzipBytes: number;
  before: Bootstrap;
  after: Bootstrap;
  stateOnly: Bootstrap;
  storage: { before: number; after: number; stateOnly: number };
}
interface Bootstrap {
  ms: number;
  bytes: number;
  requests: number;
}

export async function w5(updates = 50_000): Promise<W5Result> {
  const mf = new Miniflare(await relayOptions({ bindings: { RETAIN_ENTRIES: "0", RETAIN_SECONDS: "0", SNAPSHOT_EVERY: "0" } }));
  const url = (await mf.ready).toString().replace(/\/$/, "");
  const token = (role: "write" | "admin", sub: string, db: string) => signToken({ db, role, sub }, LOCAL_SECRET);
  const open = async (db: string, sub: string, fetchFn?: typeof fetch): Promise<Replica> =>
    openReplica({ url, db, token: await token("write", sub, db), clientId: sub, driver: "node", schema: ["CREATE TABLE item(id INTEGER PRIMARY KEY, title TEXT, n INTEGER)"], ...(fetchFn ? { fetch: fetchFn } : {}) });

  /** A fresh replica's bootstrap: time to its first sync's end, bytes its fetch received. */
  async function bootstrap(db: string, sub: string): Promise<Bootstrap & { hash: string }> {
    let bytes = 0;
    let requests = 0;
    const counting: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      const body = new Uint8Array(await res.arrayBuffer());
      bytes += body.byteLength;
      requests++;
      return new Response(body, { status: res.status, headers: res.headers });
    };
    const r = await open(db, sub, counting);
    const t0 = performance.now();
    await r.sync();
    const ms = performance.now() - t0;
    const { hash } = await r.snapshot();
    await r.close();
    return { ms, bytes, requests, hash };
  }

  try {
    const db = "w5-history";
    const w = await open(db, "writer");
    await w.transaction(async (tx) => {
      for (let i = 0; i < ROWS; i++) await tx.exec("INSERT INTO item VALUES (?, ?, 0)", [i, `item ${i}`]);
    });
    for (let i = 0; i < updates; i++) {
      await w.exec("UPDATE item SET n = n + 1, title = ? WHERE id = ?", [`update ${i}`, (i * 7919) % ROWS]);
      if (i % 5_000 === 4_999) await w.sync();
    }
    await w.sync();
    const admin = snapshotClient({ url, db, token: await token("admin", "ops", db) });
    const storageBefore = await admin.status();
    const before = await bootstrap(db, "fresh-before");
    const snap = await w.snapshot();
    await snapshotClient({ url, db, token: await token("write", "writer", db) }).upload(snap);
    const storageAfter = await admin.status();
    if (storageAfter.trimmed !== snap.seq) throw new Error(`W5: expected the log trimmed through ${snap.seq}, got ${storageAfter.trimmed}`);
    const after = await bootstrap(db, "fresh-after");
    if (after.hash !== before.hash || after.hash !== snap.hash) throw new Error("W5: bootstraps disagree");
    await w.close();

    // The same final rows, without the history.
    const flat = "w5-state-only";
    const s = await open(flat, "writer");
    const rows = await (async () => {
      const src = await open(db, "reader-final");
      await src.sync();
      const all = await src.query<{ id: number; title: string; n: number }>("SELECT * FROM item ORDER BY id");
      await src.close();
      return all;
    })();
    await s.transaction(async (tx) => {
      for (const r of rows) await tx.exec("INSERT INTO item VALUES (?, ?, ?)", [r.id, r.title, r.n]);
    });
    await s.sync();
    await s.close();
    const stateOnly = await bootstrap(flat, "fresh-flat");
    if (stateOnly.hash !== snap.hash) throw new Error("W5: the state-only database differs");
    const storageFlat = await snapshotClient({ url, db: flat, token: await token("admin", "ops", flat) }).status();
    const stored = (x: { entryBytes: number; snapshotBytes: number }) => x.entryBytes + x.snapshotBytes;
    const strip = ({ ms, bytes, requests }: Bootstrap) => ({ ms, bytes, requests });
    return {
      rows: ROWS,
      updates,
      stateBytes: snap.bytes.byteLength,
      stateGzipBytes: gzipSync(snap.bytes).byteLength,
      before: strip(before),
      after: strip(after),
      stateOnly: strip(stateOnly),
      storage: { before: stored(storageBefore), after: stored(storageAfter), stateOnly: stored(storageFlat) },
    };
  } finally {
    await mf.dispose();
  }
}

export function w5Report(r: W5Result): string {
  const kib = (b: number) => (b / 1024).toFixed(1);
  const line = (name: string, b: Bootstrap) =>
    `| ${name} | ${b.ms.toFixed(0)} | ${kib(b.bytes)} | ${b.requests} | ${(b.ms / r.stateOnly.ms).toFixed(2)} | ${(b.bytes / r.stateOnly.bytes).toFixed(2)} |`;
  return [
    `\nW5 long history: ${r.rows.toLocaleString("en-US")} rows, ${r.updates.toLocaleString("en-US")} single-row updates; a fresh replica's first sync (node driver).`,
    `State: ${kib(r.stateBytes)} KiB as a snapshot, ${kib(r.stateGzipBytes)} KiB gzipped. Relay storage (entries + snapshots): ${kib(r.storage.before)} KiB before compaction, ${kib(r.storage.after)} KiB after, ${kib(r.storage.stateOnly)} KiB for the state-only database.`,
    "| bootstrap | ms | KiB received | requests | × state-only time | × state-only bytes |",
    "| --- | --- | --- | --- | --- | --- |",
    line("full history", r.before),
    line("after compaction", r.after),
    line("state-only database", r.stateOnly),
  ].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { updates: { type: "string" } } });
  const r = await w5(values.updates ? Number(values.updates) : undefined);
  console.log(w5Report(r));
  console.log(JSON.stringify(r));
}
