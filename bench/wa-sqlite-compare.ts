/**
 * `npm i --no-save @livestore/wa-sqlite@1.0.5 && node bench/wa-sqlite-compare.ts [--runs 5]`
 *
 * Issue 18: is @livestore/wa-sqlite (wa-sqlite with the session extension) a
 * better wasm driver than @sqlite.org/sqlite-wasm? Both builds are driven by
 * the same JavaScript through their raw C exports (prepared statements, one
 * reused bind buffer, the conflict callback installed once: each build at
 * its lowest cost), on the W1/W2 shapes at the driver level: no replica
 * bookkeeping, no network. Our wasm driver (sqlite-wasm behind the Driver
 * interface) runs the same steps for reference. Not a dependency: the module
 * is loaded by name at run time, and the script says so when it is missing.
 */
import { parseArgs } from "node:util";
import { loadSqliteWasm } from "../client/drivers/wasm.ts";
import { openDriver } from "../client/drivers/index.ts";
import { INSERT_TODO, TODOS_SCHEMA, UPDATE_TODO, w1Row, w2Update } from "./rows.ts";
import { figure, fmt, table, type Figure } from "./stats.ts";

const { values: args } = parseArgs({ options: { runs: { type: "string", default: "5" }, n: { type: "string", default: "100000" }, updates: { type: "string", default: "10000" } } });
const RUNS = Number(args.runs);
const N = Number(args.n);
const U = Number(args.updates);

/** The C functions both builds export, called the same way; i64 as a JS number (safe integers only here). */
interface CApi {
  name: string;
  version: string;
  heap(): Uint8Array;
  malloc(n: number): number;
  free(p: number): void;
  cstr(s: string): number;
  peek32(p: number): number;
  open(): number;
  exec(db: number, sql: number): number;
  prepare(db: number, sql: number, out: number): number;
  bindInt64(stmt: number, i: number, v: number): number;
  bindText(stmt: number, i: number, p: number, n: number): number;
  step(stmt: number): number;
  reset(stmt: number): number;
  sessionCreate(db: number, main: number, out: number): number;
  sessionAttach(s: number): number;
  sessionChangeset(s: number, n: number, out: number): number;
  sessionDelete(s: number): void;
  apply(db: number, n: number, p: number, conflict: number): number;
  /** A conflict callback (ctx, type, iter) => resolution as a function pointer. */
  install(fn: (ctx: number, type: number, iter: number) => number): number;
  sqliteFree(p: number): void;
}

type Fn = (...a: (number | bigint)[]) => number;

async function sqliteWasm(): Promise<CApi> {
  const s = await loadSqliteWasm();
  const x = s.wasm.exports as Record<string, Fn>;
  const mem = (p: number) => p;
  return {
    name: "@sqlite.org/sqlite-wasm (raw exports)",
    version: s.version.libVersion,
    heap: () => s.wasm.heap8u(),
    malloc: (n) => s.wasm.alloc(n) as number,
    free: (p) => s.wasm.dealloc(p),
    cstr: (str) => s.wasm.allocCString(str, false) as number,
    peek32: (p) => s.wasm.peek32(p) as number,
    open: () => {
      const out = s.wasm.alloc(8) as number;
      x.sqlite3_open_v2!(s.wasm.allocCString(":memory:", false) as number, out, 6, 0);
      return s.wasm.peekPtr(out) as number;
    },
    exec: (db, sql) => x.sqlite3_exec!(db, sql, 0, 0, 0),
    prepare: (db, sql, out) => x.sqlite3_prepare_v2!(db, sql, -1, out, 0),
    bindInt64: (st, i, v) => ((v | 0) === v ? x.sqlite3_bind_int!(st, i, v) : x.sqlite3_bind_int64!(st, i, BigInt(v))),
    bindText: (st, i, p, n) => x.sqlite3_bind_text!(st, i, p, n, -1),
    step: (st) => x.sqlite3_step!(st),
    reset: (st) => x.sqlite3_reset!(st),
    sessionCreate: (db, main, out) => x.sqlite3session_create!(db, main, out),
    sessionAttach: (se) => x.sqlite3session_attach!(se, 0),
    sessionChangeset: (se, n, out) => x.sqlite3session_changeset!(se, n, out),
    sessionDelete: (se) => void x.sqlite3session_delete!(se),
    apply: (db, n, p, cb) => x.sqlite3changeset_apply!(db, n, p, 0, cb, 0),
    install: (fn) => s.wasm.installFunction("i(pip)", fn) as number,
    sqliteFree: (p) => void x.sqlite3_free!(mem(p)),
  };
}

async function waSqlite(): Promise<CApi | undefined> {
  const spec = "@livestore/wa-sqlite/dist/wa-sqlite.node.mjs";
  let factory: { default: () => Promise<Record<string, Fn> & { HEAPU8: Uint8Array; addFunction(f: unknown, sig: string): number; UTF8ToString(p: number): string }> };
  try {
    factory = await import(spec);
  } catch {
    return undefined;
  }
  const M = await factory.default();
  const cstr = (str: string) => {
    const b = new TextEncoder().encode(str + "\0");
    const p = M._malloc!(b.length);
    M.HEAPU8.set(b, p);
    return p;
  };
  return {
    name: "@livestore/wa-sqlite 1.0.5 (raw exports)",
    version: M.UTF8ToString(M._sqlite3_libversion!()),
    heap: () => M.HEAPU8,
    malloc: (n) => M._malloc!(n),
    free: (p) => void M._free!(p),
    cstr,
    peek32: (p) => new Int32Array(M.HEAPU8.buffer, p, 1)[0]!,
    open: () => {
      const out = M._malloc!(8);
      M._sqlite3_open_v2!(cstr(":memory:"), out, 6, 0);
      return new Int32Array(M.HEAPU8.buffer, out, 1)[0]!;
    },
    exec: (db, sql) => M._sqlite3_exec!(db, sql, 0, 0, 0),
    prepare: (db, sql, out) => M._sqlite3_prepare_v2!(db, sql, -1, out, 0),
    // Built without WASM_BIGINT: an i64 goes as two i32 halves, so no BigInt is needed.
    bindInt64: (st, i, v) => ((v | 0) === v ? M._sqlite3_bind_int!(st, i, v) : M._sqlite3_bind_int64!(st, i, v >>> 0, Math.floor(v / 2 ** 32))),
    bindText: (st, i, p, n) => M._sqlite3_bind_text!(st, i, p, n, -1),
    step: (st) => M._sqlite3_step!(st),
    reset: (st) => M._sqlite3_reset!(st),
    sessionCreate: (db, main, out) => M._sqlite3session_create!(db, main, out),
    sessionAttach: (se) => M._sqlite3session_attach!(se, 0),
    sessionChangeset: (se, n, out) => M._sqlite3session_changeset!(se, n, out),
    sessionDelete: (se) => void M._sqlite3session_delete!(se),
    apply: (db, n, p, cb) => M._sqlite3changeset_apply!(db, n, p, 0, cb, 0),
    install: (fn) => {
      try {
        return M.addFunction(fn, "iiii");
      } catch (e) {
        // 1.0.5 is built without ALLOW_TABLE_GROWTH: no callback can be added.
        // A null callback serves the timings (no conflict there) and traps on any conflict.
        process.stderr.write(`wa-sqlite addFunction: ${(e as Error).message ?? e}\n`);
        return 0;
      }
    },
    sqliteFree: (p) => void M._sqlite3_free!(p),
  };
}

/** The raw W1/W2 steps on one build. */
class Raw {
  readonly c: CApi;
  readonly db: number;
  private readonly out: number;
  private readonly buf: number;
  private readonly main: number;
  private readonly stmts = new Map<string, number>();
  private readonly sqls = new Map<string, number>();
  private readonly encoder = new TextEncoder();
  resolution = 0;
  readonly conflict: number;
  constructor(c: CApi) {
    this.c = c;
    this.db = c.open();
    this.out = c.malloc(16);
    this.buf = c.malloc(4096);
    this.main = c.cstr("main");
    this.conflict = c.install((_ctx, _type, _iter) => this.resolution);
    this.exec(TODOS_SCHEMA);
  }
  exec(sql: string): void {
    let p = this.sqls.get(sql);
    if (p === undefined) this.sqls.set(sql, (p = this.c.cstr(sql)));
    const rc = this.c.exec(this.db, p);
    if (rc !== 0) throw new Error(`exec ${sql}: ${rc}`);
  }
  run(sql: string, params: readonly (number | string)[]): void {
    const c = this.c;
    let st = this.stmts.get(sql);
    if (st === undefined) {
      if (c.prepare(this.db, this.c.cstr(sql), this.out) !== 0) throw new Error(`prepare ${sql}`);
      this.stmts.set(sql, (st = c.peek32(this.out)));
    }
    for (let i = 0; i < params.length; i++) {
      const v = params[i]!;
      if (typeof v === "number") c.bindInt64(st, i + 1, v);
      else {
        const { written } = this.encoder.encodeInto(v, c.heap().subarray(this.buf, this.buf + 4096));
        c.bindText(st, i + 1, this.buf, written);
      }
    }
    const rc = c.step(st);
    c.reset(st);
    if (rc !== 101) throw new Error(`step ${sql}: ${rc}`);
  }
  session(): number {
    if (this.c.sessionCreate(this.db, this.main, this.out) !== 0) throw new Error("session");
    const s = this.c.peek32(this.out);
    this.c.sessionAttach(s);
    return s;
  }
  changeset(s: number): Uint8Array {
    const c = this.c;
    if (c.sessionChangeset(s, this.out, this.out + 8) !== 0) throw new Error("changeset");
    const n = c.peek32(this.out);
    const p = c.peek32(this.out + 8);
    const bytes = c.heap().slice(p, p + n);
    c.sqliteFree(p);
    c.sessionDelete(s);
    return bytes;
  }
  apply(cs: Uint8Array): number {
    const p = this.c.malloc(Math.max(cs.length, 1));
    this.c.heap().set(cs, p);
    const rc = this.c.apply(this.db, cs.length, p, this.conflict);
    this.c.free(p);
    return rc;
  }
}

function cpu<T>(fn: () => T): { ms: number; value: T } {
  const c0 = process.cpuUsage();
  const value = fn();
  const c = process.cpuUsage(c0);
  return { ms: (c.user + c.system) / 1000, value };
}

interface Steps {
  w1Write(): Uint8Array;
  w2Write(): Uint8Array[];
  w1Apply(cs: Uint8Array): void;
  w2Apply(list: Uint8Array[]): void;
}

function rawSteps(c: CApi): Steps {
  return {
    w1Write: () => {
      const r = new Raw(c);
      const s = r.session();
      r.exec("BEGIN");
      for (let i = 1; i <= N; i++) r.run(INSERT_TODO, w1Row(i));
      r.exec("COMMIT");
      return r.changeset(s);
    },
    w2Write: () => {
      const r = new Raw(c);
      r.exec("BEGIN");
      for (let i = 1; i <= U; i++) r.run(INSERT_TODO, w1Row(i));
      r.exec("COMMIT");
      const out: Uint8Array[] = [];
      for (let k = 1; k <= U; k++) {
        const s = r.session();
        r.exec("BEGIN");
        r.run(UPDATE_TODO, w2Update(k));
        r.exec("COMMIT");
        out.push(r.changeset(s));
      }
      return out;
    },
    w1Apply: (cs) => {
      const r = new Raw(c);
      r.resolution = 2; // ABORT: none expected
      r.exec("BEGIN");
      if (r.apply(cs) !== 0) throw new Error("apply");
      r.exec("COMMIT");
    },
    w2Apply: (list) => {
      const r = new Raw(c);
      r.resolution = 2;
      r.exec("BEGIN");
      for (let i = 1; i <= U; i++) r.run(INSERT_TODO, w1Row(i));
      r.exec("COMMIT");
      for (const cs of list) {
        r.exec("BEGIN");
        if (r.apply(cs) !== 0) throw new Error("apply");
        r.exec("COMMIT");
      }
    },
  };
}

/** A DATA conflict resolved by a custom callback: OMIT keeps the local row, REPLACE takes the change, ABORT undoes. */
function conflictHandling(c: CApi): string {
  const src = new Raw(c);
  src.run(INSERT_TODO, [1, "base", 0, 1]);
  const s = src.session();
  src.run(UPDATE_TODO, [1, 2, 1]);
  const cs = src.changeset(s);
  const results: string[] = [];
  for (const resolution of [0, 1, 2]) {
    const dst = new Raw(c);
    dst.run(INSERT_TODO, [1, "base", 0, 99]); // updated_at differs: DATA conflict
    dst.resolution = resolution;
    let seen = -1;
    const cb = c.install((_ctx, type) => ((seen = type), resolution));
    const p = c.malloc(cs.length);
    c.heap().set(cs, p);
    try {
      const rc = c.apply(dst.db, cs.length, p, cb);
      results.push(`${["OMIT", "REPLACE", "ABORT"][resolution]}: type ${seen}, rc ${rc}`);
    } catch (e) {
      results.push(`${["OMIT", "REPLACE", "ABORT"][resolution]}: ${(e as Error).message}`);
    }
  }
  return results.join("; ");
}

async function driverSteps(): Promise<Steps> {
  const open = async () => {
    const d = await openDriver("wasm", ":memory:");
    d.exec(TODOS_SCHEMA);
    return d;
  };
  const seeded = async () => {
    const d = await open();
    d.exec("BEGIN");
    for (let i = 1; i <= U; i++) d.run(INSERT_TODO, w1Row(i));
    d.exec("COMMIT");
    return d;
  };
  const pool = { a: await open(), b: await seeded(), c: await open(), d: await seeded() };
  return {
    w1Write: () => {
      const d = pool.a;
      const s = d.session();
      d.exec("BEGIN");
      for (let i = 1; i <= N; i++) d.run(INSERT_TODO, w1Row(i));
      d.exec("COMMIT");
      const cs = s.changeset();
      s.close();
      return cs;
    },
    w2Write: () => {
      const d = pool.b;
      const out: Uint8Array[] = [];
      for (let k = 1; k <= U; k++) {
        const s = d.session();
        d.exec("BEGIN");
        d.run(UPDATE_TODO, w2Update(k));
        d.exec("COMMIT");
        out.push(s.changeset());
        s.close();
      }
      return out;
    },
    w1Apply: (cs) => {
      pool.c.exec("BEGIN");
      pool.c.applyChangeset(cs, () => 2);
      pool.c.exec("COMMIT");
    },
    w2Apply: (list) => {
      for (const cs of list) {
        pool.d.exec("BEGIN");
        pool.d.applyChangeset(cs, () => 2);
        pool.d.exec("COMMIT");
      }
    },
  };
}

const builds: { name: string; version: string; steps: () => Promise<Steps>; conflicts?: string }[] = [];
const sw = await sqliteWasm();
builds.push({ name: sw.name, version: sw.version, steps: async () => rawSteps(sw), conflicts: conflictHandling(sw) });
const wa = await waSqlite();
if (wa) builds.push({ name: wa.name, version: wa.version, steps: async () => rawSteps(wa), conflicts: conflictHandling(wa) });
else process.stderr.write("@livestore/wa-sqlite is not installed: npm i --no-save @livestore/wa-sqlite@1.0.5\n");
builds.push({ name: "our wasm driver (sqlite-wasm, Driver API)", version: sw.version, steps: driverSteps });

// The inputs to apply, captured once by the reference build.
const ref = rawSteps(sw);
const w1cs = ref.w1Write();
const w2cs = ref.w2Write();

const rows: string[][] = [];
for (const b of builds) {
  const figs: Record<string, number[]> = { w1Write: [], w2Write: [], w1Apply: [], w2Apply: [] };
  let same = true;
  for (let i = 0; i < RUNS; i++) {
    const steps = await b.steps(); // fresh databases per run
    const w1 = cpu(() => steps.w1Write());
    const w2 = cpu(() => steps.w2Write());
    same &&= Buffer.compare(w1.value, w1cs) === 0 && w2.value.every((cs, k) => Buffer.compare(cs, w2cs[k]!) === 0);
    figs.w1Write!.push(w1.ms);
    figs.w2Write!.push(w2.ms);
    figs.w1Apply!.push(cpu(() => steps.w1Apply(w1cs)).ms);
    figs.w2Apply!.push(cpu(() => steps.w2Apply(w2cs)).ms);
  }
  const f = (k: string): Figure => figure(figs[k]!);
  rows.push([b.name, b.version, fmt(f("w1Write")), fmt(f("w2Write")), fmt(f("w1Apply")), fmt(f("w2Apply")), same ? "yes" : "NO"]);
  if (b.conflicts) process.stderr.write(`${b.name}: custom conflict callback ${b.conflicts}\n`);
}
console.log(`CPU ms, median (min–max) of ${RUNS} runs; W1 = ${N.toLocaleString("en-US")} inserts in one transaction, W2 = ${U.toLocaleString("en-US")} single-row update transactions`);
console.log(table(["build", "SQLite", "W1 write", "W2 write", "W1 apply", "W2 apply", "same changesets"], rows));
