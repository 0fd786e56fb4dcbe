/**
 * `node bench/drivers.ts [--runs 5] [--n 100000] [--updates 10000] [--drivers node,wasm] [--only w1-write,w2-apply]`
 *
 * The client's local paths in one process, without the relay (issue 18): what
 * W1 and W2 cost on the writing replica (a transaction of N inserts through
 * `tx.exec`; N single-row update transactions through `replica.exec`) and on
 * the receiving one (a W1 changeset applied; W2's changesets applied one
 * transaction each), next to node:sqlite doing the same with no replica
 * around it (the limit's share). Medians of `runs` runs, wall and CPU time:
 * the machine is shared, and CPU time moves less with other processes' load.
 */
import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { openReplica, type Replica } from "../client/index.ts";
import { openDriver, type Driver, type DriverKind } from "../client/drivers/index.ts";
import { INSERT_TODO, TODOS_SCHEMA, UPDATE_TODO, w1Row, w2Update } from "./rows.ts";
import { figure, fmt, table, type Figure } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "5" },
    n: { type: "string", default: "100000" },
    updates: { type: "string", default: "10000" },
    drivers: { type: "string", default: "node,wasm" },
    only: { type: "string" },
  },
});
const RUNS = Number(args.runs);
const N = Number(args.n);
const U = Number(args.updates);
const drivers = args.drivers!.split(",") as DriverKind[];

interface Sample {
  ms: number;
  cpu: number;
}
async function time(fn: () => Promise<void> | void): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { ms, cpu: (c.user + c.system) / 1000 };
}

async function replica(kind: DriverKind): Promise<Replica> {
  return openReplica({ url: "http://127.0.0.1:1", db: "bench", clientId: "a", driver: kind, schema: [TODOS_SCHEMA] });
}

/** The W1 changeset and W2's update changesets, captured once with node:sqlite. */
function changesets(): { w1: Uint8Array; w2: Uint8Array[] } {
  const db = new DatabaseSync(":memory:");
  db.exec(TODOS_SCHEMA);
  const insert = db.prepare(INSERT_TODO);
  const update = db.prepare(UPDATE_TODO);
  let s = db.createSession();
  db.exec("BEGIN");
  for (let i = 1; i <= N; i++) insert.run(...w1Row(i));
  db.exec("COMMIT");
  const w1 = s.changeset();
  s.close();
  const w2: Uint8Array[] = [];
  for (let k = 1; k <= U; k++) {
    s = db.createSession();
    update.run(...w2Update(k));
    w2.push(s.changeset());
    s.close();
  }
  db.close();
  return { w1, w2 };
}

type Case = (kind: DriverKind | "limit") => Promise<Sample>;

const cases: Record<string, Case> = {
  /** W1 on A: N inserts in one transaction, captured into the outbox. */
  "W1 write": async (kind) => {
    if (kind === "limit") {
      const db = new DatabaseSync(":memory:");
      db.exec(TODOS_SCHEMA);
      const insert = db.prepare(INSERT_TODO);
      return time(() => {
        const s = db.createSession();
        db.exec("BEGIN");
        for (let i = 1; i <= N; i++) insert.run(...w1Row(i));
        db.exec("COMMIT");
        s.changeset();
        s.close();
      });
    }
    const r = await replica(kind);
    const t = await time(() => r.transaction(async (tx) => {
      for (let i = 1; i <= N; i++) await tx.exec(INSERT_TODO, w1Row(i));
    }));
    await r.close();
    return t;
  },
  /** W2 on A: U single-row update transactions, each captured into the outbox. */
  "W2 write": async (kind) => {
    if (kind === "limit") {
      const db = new DatabaseSync(":memory:");
      db.exec(TODOS_SCHEMA);
      const insert = db.prepare(INSERT_TODO);
      const update = db.prepare(UPDATE_TODO);
      db.exec("BEGIN");
      for (let i = 1; i <= U; i++) insert.run(...w1Row(i));
      db.exec("COMMIT");
      return time(() => {
        for (let k = 1; k <= U; k++) {
          const s = db.createSession();
          db.exec("BEGIN");
          update.run(...w2Update(k));
          db.exec("COMMIT");
          s.changeset();
          s.close();
        }
      });
    }
    const r = await replica(kind);
    await r.transaction(async (tx) => {
      for (let i = 1; i <= U; i++) await tx.exec(INSERT_TODO, w1Row(i));
    });
    const t = await time(async () => {
      for (let k = 1; k <= U; k++) await r.exec(UPDATE_TODO, w2Update(k));
    });
    await r.close();
    return t;
  },
  /** W1 on B: the N-row changeset applied in one transaction. */
  "W1 apply": async (kind) => {
    const d = await target(kind);
    return time(() => {
      d.exec("BEGIN");
      d.applyChangeset(data.w1, () => 2);
      d.exec("COMMIT");
    });
  },
  /** W2 on B: each update changeset applied in a transaction of its own, a conflict handler given. */
  "W2 apply": async (kind) => {
    const d = await target(kind);
    d.applyChangeset(data.w1, () => 2);
    return time(() => {
      for (const cs of data.w2) {
        d.exec("BEGIN");
        d.applyChangeset(cs, () => 2);
        d.exec("COMMIT");
      }
    });
  },
};

/** A fresh database with the schema, through the driver (node:sqlite's for the limit). */
async function target(kind: DriverKind | "limit"): Promise<Driver> {
  const d = await openDriver(kind === "limit" ? "node" : kind, ":memory:");
  d.exec(TODOS_SCHEMA);
  return d;
}

const data = changesets();
const kinds: (DriverKind | "limit")[] = ["limit", ...drivers];
const results: Record<string, Record<string, { ms: Figure; cpu: Figure }>> = {};
const slug = (name: string) => name.toLowerCase().replace(" ", "-");
const only = args.only?.split(",");
for (const [name, run] of Object.entries(cases)) {
  if (only && !only.includes(slug(name))) continue;
  results[name] = {};
  for (const kind of kinds) {
    const samples: Sample[] = [];
    for (let i = 0; i < RUNS; i++) samples.push(await run(kind));
    results[name][kind] = { ms: figure(samples.map((s) => s.ms)), cpu: figure(samples.map((s) => s.cpu)) };
    process.stderr.write(`${name} ${kind}: ${fmt(results[name][kind].ms, 1)} ms\n`);
  }
}

const rows: string[][] = [];
for (const [name, byKind] of Object.entries(results)) {
  const limit = byKind["limit"]!.ms.median;
  const count = name.startsWith("W1") ? N : U;
  for (const kind of kinds) {
    const f = byKind[kind]!;
    rows.push([name, kind, count.toLocaleString("en-US"), fmt(f.ms, 1), fmt(f.cpu, 0), (f.ms.median / limit).toFixed(2), Math.round(count / (f.ms.median / 1000)).toLocaleString("en-US")]);
  }
}
console.log(`Client local paths, no relay; median (min–max) of ${RUNS} runs; load ${(await import("node:os")).loadavg()[0]!.toFixed(2)}`);
console.log(table(["path", "driver", "N", "wall ms", "CPU ms", "× node:sqlite", "rows/s"], rows));
