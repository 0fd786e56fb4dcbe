/**
 * Differential fuzzing of the relay's changeset validator against SQLite's own
 * iterator (sqlite3changeset_start / next / finalize in sqlite-wasm 3.54.1).
 *
 * Every input is mutated from a real changeset (bit flips, byte sets,
 * truncation, inserted and deleted bytes, splices of two changesets, repeated
 * chunks, random tails) or is random bytes. The relay must accept exactly what
 * SQLite parses, except where it is deliberately stricter: each such
 * disagreement must be explained by one named rule (`explain` below, an
 * independent re-statement of the STRICTER rules in protocol/changeset.ts),
 * and the validator's error must point at the byte the rule names. Anything
 * else fails the test, is shrunk to a small input, printed, and saved under
 * test-artifacts/.
 *
 * test/corpus/ holds interesting inputs, one per file, named
 * `<outcome>--<hash>.bin` (outcome: `accept`, `reject`, or the rule's name).
 * They are replayed on every run and must keep their outcome; they also seed
 * the mutator. RELAY_FUZZ_SAVE=1 adds the shortest new example of each outcome.
 *
 * Knobs: RELAY_FUZZ_INPUTS (default 300,000: about 5 s), RELAY_FUZZ_SEED
 * (default: random, printed), RELAY_LONG=1 (10,000,000 inputs).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { validateChangeset } from "../protocol/changeset.ts";
import { MAX_COLUMNS } from "../protocol/limits.ts";
import { RelayError } from "../protocol/errors.ts";
import { sqliteParse } from "./support/sqlite-oracle.ts";

const CORPUS = fileURLToPath(new URL("./corpus/", import.meta.url));
const ARTIFACTS = fileURLToPath(new URL("../test-artifacts/", import.meta.url));
const INPUTS = Number(process.env.RELAY_FUZZ_INPUTS ?? (process.env.RELAY_LONG ? 10_000_000 : 300_000));
const SEED = Number(process.env.RELAY_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

// ---------------------------------------------------------------- the rules

/**
 * The deliberate differences, by name. Each is a place where SQLite's iterator
 * reads bytes the session module never writes; the comment in
 * protocol/changeset.ts says why accepting them would hurt.
 */
const RULES = [
  "empty-input",
  "patchset",
  "varint-non-minimal",
  "varint-over-31-bits",
  "too-many-columns",
  "no-primary-key",
  "pk-positions-not-1..k",
  "empty-table-name",
  "sqlite_-table",
  "_relay_-table",
  "table-name-not-utf8",
  "indirect-flag-not-0-or-1",
  "unknown-value-type",
  "real-nan",
  "undefined-in-insert-or-delete",
  "update-old-lacks-pk",
  "update-new-without-old",
  "update-old-without-new",
  "update-changes-no-column",
] as const;
type Rule = (typeof RULES)[number];

/** What the independent walker found: the first rule broken (and where), a structural error, or nothing. */
type Finding = { rule: Rule; at: number } | { structural: string; at: number } | null;

class Stop {
  readonly finding: NonNullable<Finding>;
  constructor(finding: NonNullable<Finding>) {
    this.finding = finding;
  }
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Walks the bytes in the order SQLite writes them and stops at the first
 * strictness rule broken or the first structural error. Written for
 * clarity, not speed, and separately from the codec: it is the specification
 * the validator is checked against.
 */
function explain(b: Uint8Array): Finding {
  const rule = (r: Rule, at: number): never => {
    throw new Stop({ rule: r, at });
  };
  const broken = (what: string, at: number): never => {
    throw new Stop({ structural: what, at });
  };
  const varint = (at: number): [value: number, end: number] => {
    if (at >= b.length) broken("varint past end", at);
    if (b[at] === 0x80) rule("varint-non-minimal", at);
    let v = 0;
    for (let i = 0; i < 9; i++) {
      if (at + i >= b.length) broken("varint past end", at);
      const x = b[at + i]!;
      v = v * 128 + (x & 0x7f);
      if (x < 0x80) {
        if (v > 0x7fffffff) rule("varint-over-31-bits", at);
        return [v, at + i + 1];
      }
    }
    return rule("varint-over-31-bits", at);
  };
  try {
    if (b.length === 0) rule("empty-input", 0);
    let pos = 0;
    let nCol = 0;
    let pk: number[] = [];
    while (pos < b.length) {
      const tag = b[pos]!;
      if (tag === 0x50) rule("patchset", pos);
      if (tag === 0x54) {
        const [n, afterN] = varint(pos + 1);
        if (n === 0) broken("0 columns", pos + 1);
        if (n > MAX_COLUMNS) rule("too-many-columns", pos + 1);
        if (afterN + n > b.length) broken("pk flags past end", afterN);
        pk = Array.from(b.subarray(afterN, afterN + n));
        const positions = pk.filter((f) => f !== 0).sort((x, y) => x - y);
        if (positions.length === 0) rule("no-primary-key", afterN);
        const dup = pk.findIndex((f, i) => f !== 0 && pk.indexOf(f) !== i);
        if (dup >= 0) rule("pk-positions-not-1..k", afterN + dup);
        if (positions.at(-1) !== positions.length) rule("pk-positions-not-1..k", afterN);
        const nameAt = afterN + n;
        const nul = b.indexOf(0, nameAt);
        if (nul < 0) broken("name without NUL", nameAt);
        const nameBytes = b.subarray(nameAt, nul);
        if (nameBytes.length === 0) rule("empty-table-name", nameAt);
        const ascii = String.fromCharCode(...nameBytes.subarray(0, 7)).toLowerCase();
        if (ascii === "sqlite_") rule("sqlite_-table", nameAt);
        if (ascii === "_relay_") rule("_relay_-table", nameAt);
        try {
          strictUtf8.decode(nameBytes);
        } catch {
          rule("table-name-not-utf8", nameAt);
        }
        nCol = n;
        pos = nul + 1;
        continue;
      }
      if (pos === 0) broken("first byte is not a table header", 0);
      const op = tag;
      if (op !== 0x12 && op !== 0x17 && op !== 0x09) broken("unknown op", pos);
      if (pos + 1 >= b.length) broken("change truncated", pos);
      if (b[pos + 1]! > 1) rule("indirect-flag-not-0-or-1", pos + 1);
      const start = pos;
      pos += 2;
      const record = (allowUndefined: boolean): number[] => {
        const at: number[] = [];
        for (let i = 0; i < nCol; i++) {
          at.push(pos);
          if (pos >= b.length) broken("record past end", pos);
          const type = b[pos++]!;
          if (type === 0) {
            if (!allowUndefined) rule("undefined-in-insert-or-delete", pos - 1);
          } else if (type === 1 || type === 2) {
            if (pos + 8 > b.length) broken("number past end", pos - 1);
            const v = new DataView(b.buffer, b.byteOffset + pos, 8).getFloat64(0);
            if (type === 2 && Number.isNaN(v)) rule("real-nan", pos - 1);
            pos += 8;
          } else if (type === 3 || type === 4) {
            const [n, end] = varint(pos);
            if (end + n > b.length) broken("text/blob past end", pos - 1);
            pos = end + n;
          } else if (type !== 5) {
            rule("unknown-value-type", pos - 1);
          }
        }
        return at;
      };
      if (op === 0x12 || op === 0x09) {
        record(false);
        continue;
      }
      const oldAt = record(true);
      const newAt = record(true);
      let changes = false;
      for (let i = 0; i < nCol; i++) {
        const o = b[oldAt[i]!]!, n = b[newAt[i]!]!;
        if (pk[i] !== 0) {
          if (o === 0) rule("update-old-lacks-pk", oldAt[i]!);
        } else if (o === 0) {
          if (n !== 0) rule("update-new-without-old", newAt[i]!);
        } else {
          if (n === 0) rule("update-old-without-new", oldAt[i]!);
          changes = true;
        }
      }
      if (!changes) rule("update-changes-no-column", start);
    }
    return null;
  } catch (e) {
    if (e instanceof Stop) return e.finding;
    throw e;
  }
}

// ---------------------------------------------------------------- the verdict

type Outcome = "accept" | "reject" | Rule;
/** An input whose verdicts no rule explains. */
interface Unexplained {
  why: string;
  input: Uint8Array;
}

function ours(b: Uint8Array): { ok: true; changes: number } | { ok: false; at: number; message: string } {
  try {
    return { ok: true, changes: validateChangeset(b).changes };
  } catch (e) {
    if (!(e instanceof RelayError) || e.code !== "malformed_changeset") throw e;
    // The validator names the offending byte as "(byte N)": the rule must point at the same one.
    const at = Number(/\(byte (\d+)\)$/.exec(e.message)?.[1] ?? NaN);
    return { ok: false, at, message: e.message };
  }
}

/** Classify one input, or say why it is unexplained. */
function judge(b: Uint8Array): Outcome | Unexplained {
  const us = ours(b);
  const them = sqliteParse(b);
  const sqliteOk = them.rc === 0;
  if (us.ok && sqliteOk) {
    if (us.changes !== them.changes) return { why: `both accept, but we count ${us.changes} changes and SQLite ${them.changes}`, input: b };
    const f = explain(b);
    if (f) return { why: `both accept, but the rules say ${JSON.stringify(f)}: the validator misses a rule`, input: b };
    return "accept";
  }
  if (!us.ok && !sqliteOk) return "reject";
  if (us.ok) return { why: `the relay accepts what SQLite's iterator refuses (rc ${them.rc})`, input: b };
  const f = explain(b);
  if (!f || !("rule" in f)) return { why: `the relay refuses (${us.message}) what SQLite accepts, and no rule explains it (${JSON.stringify(f)})`, input: b };
  if (f.at !== us.at) return { why: `rule ${f.rule} breaks at byte ${f.at}, but the validator says: ${us.message}`, input: b };
  return f.rule;
}

// ---------------------------------------------------------------- inputs

/** A small, fast, seedable PRNG (mulberry32). */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n) >>> 0;
  };
}

/** Real changesets from node:sqlite: small, of every shape the session module writes. */
function sqliteMade(): Uint8Array[] {
  const db = new DatabaseSync(":memory:");
  db.exec(`
    CREATE TABLE t(id INTEGER PRIMARY KEY, v);
    CREATE TABLE pairs(a TEXT, b INTEGER, c BLOB, d, PRIMARY KEY(c, a));
    CREATE TABLE kv(note TEXT, k TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE r(x REAL PRIMARY KEY, y, z);
    CREATE TABLE u(id PRIMARY KEY, v);
  `);
  const out: Uint8Array[] = [];
  const capture = (sql: string): void => {
    const s = db.createSession();
    db.exec(`BEGIN; ${sql}; COMMIT`);
    const cs = s.changeset();
    s.close();
    if (cs.length > 0) out.push(cs);
  };
  capture("INSERT INTO t VALUES (1, 'a'), (2, 2.5), (3, x'00ff'), (4, NULL), (5, -9223372036854775808)");
  capture("INSERT INTO pairs VALUES ('k', 1, x'01', 'd'), ('l', 2, x'', 1.0)");
  capture("INSERT INTO kv VALUES ('n', 'k1'), (NULL, 'ключ')");
  capture("INSERT INTO r VALUES (1.5, 'y', 0), (-0.0, NULL, 'z')");
  capture("UPDATE t SET v = 'b' WHERE id = 1");
  capture("UPDATE pairs SET b = 3, d = NULL WHERE a = 'k'");
  capture("UPDATE kv SET note = 'm' WHERE k = 'k1'; DELETE FROM t WHERE id = 2");
  capture("UPDATE t SET id = 10 WHERE id = 3");
  capture("UPDATE r SET z = z + 1, y = 'yy' WHERE x = 1.5");
  capture(`INSERT INTO t VALUES (20, '${"x".repeat(200)}')`);
  capture("DELETE FROM pairs; DELETE FROM kv WHERE k = 'ключ'");
  capture("INSERT INTO t VALUES (30, 1); UPDATE t SET v = 2 WHERE id = 30; INSERT INTO kv VALUES ('a', 'b')");
  // A PK that changes type but not value, with another column: the session
  // module writes a new value on the PK column (the validator allows it).
  capture("INSERT INTO u VALUES (4, 'x')");
  capture("UPDATE u SET id = 4.0, v = 'four' WHERE id = 4");
  db.close();
  return out;
}

function loadCorpus(): { name: string; outcome: string; bytes: Uint8Array }[] {
  return readdirSync(CORPUS)
    .filter((f) => f.endsWith(".bin"))
    .sort()
    .map((name) => ({ name, outcome: name.split("--")[0]!, bytes: new Uint8Array(readFileSync(CORPUS + name)) }));
}

const INTERESTING = [0, 1, 2, 3, 4, 5, 6, 0x09, 0x12, 0x17, 0x50, 0x54, 0x7f, 0x80, 0x81, 0xff];

/** 1–4 stacked mutations of a base (or, one time in 20, random bytes). */
function mutant(rand: (n: number) => number, bases: Uint8Array[]): Uint8Array {
  if (rand(20) === 0) {
    const b = Uint8Array.from({ length: rand(64) }, () => rand(256));
    if (b.length > 0 && rand(2) === 0) b[0] = 0x54;
    return b;
  }
  let b = Array.from(bases[rand(bases.length)]!);
  const rounds = 1 + rand(4);
  for (let r = 0; r < rounds; r++) {
    const at = rand(b.length + 1);
    switch (rand(11)) {
      case 0: // bit flip
        if (at < b.length) b[at]! ^= 1 << rand(8);
        break;
      case 1: // an interesting byte
        if (at < b.length) b[at] = INTERESTING[rand(INTERESTING.length)]!;
        break;
      case 2: // a random byte
        if (at < b.length) b[at] = rand(256);
        break;
      case 3: // truncate
        b = b.slice(0, at);
        break;
      case 4: // insert bytes
        b.splice(at, 0, ...Array.from({ length: 1 + rand(3) }, () => (rand(2) ? INTERESTING[rand(INTERESTING.length)]! : rand(256))));
        break;
      case 5: // delete bytes
        b.splice(at, 1 + rand(4));
        break;
      case 6: {
        // splice: our prefix, another changeset's suffix
        const other = bases[rand(bases.length)]!;
        b = [...b.slice(0, at), ...other.subarray(rand(other.length + 1))];
        break;
      }
      case 7: {
        // repeat a chunk (a second change or header)
        const len = 1 + rand(24);
        b.splice(at, 0, ...b.slice(at, at + len));
        break;
      }
      case 8: // append another whole changeset (a valid concatenation, mostly)
        b = [...b, ...bases[rand(bases.length)]!];
        break;
      case 9: {
        // re-encode a byte as a varint: non-minimal, or wide enough to pass 2^31
        const v = at < b.length ? b[at]! : 0;
        const wide = [[0x80, v & 0x7f], [0x80, 0x80, v & 0x7f], [0x88, 0x80, 0x80, 0x80, v & 0x7f], [0x81, 0x80, 0x80, 0x80, 0x80, v & 0x7f]][rand(4)]!;
        b.splice(at, 1, ...wide);
        break;
      }
      case 10: {
        // rename a table: the name of the last header at or before `at`
        const t = b.lastIndexOf(0x54, at);
        const nul = t < 0 ? -1 : b.indexOf(0, t + 2);
        if (nul < 0) break;
        const nCol = b[t + 1]! < 0x80 ? b[t + 1]! : 0;
        const from = t + 2 + nCol;
        if (from > nul) break;
        const names = ["sqlite_stat1", "SQLite_x", "_relay_outbox", "_RELAY_", "", "t\xff", "\xc3", "ok"];
        const name = Array.from(Buffer.from(names[rand(names.length)]!, "latin1"));
        b.splice(from, nul - from, ...name);
        break;
      }
    }
  }
  return Uint8Array.from(b);
}

/** Smaller inputs that stay unexplained for the same reason kind: remove chunks, then single bytes. */
function shrink(u: Unexplained): Unexplained {
  const kind = (x: Unexplained) => x.why.split(":")[0]!.replace(/\d+/g, "N");
  let best = u;
  for (let chunk = Math.max(1, best.input.length >> 1); chunk >= 1; chunk >>= 1) {
    for (let at = 0; at + chunk <= best.input.length; ) {
      const candidate = Uint8Array.from([...best.input.subarray(0, at), ...best.input.subarray(at + chunk)]);
      const v = judge(candidate);
      if (typeof v !== "string" && kind(v) === kind(best)) best = v;
      else at++;
    }
  }
  return best;
}

const hashOf = (b: Uint8Array) => createHash("sha256").update(b).digest("hex").slice(0, 10);
const hexOf = (b: Uint8Array) => Buffer.from(b).toString("hex");

function report(unexplained: Unexplained[]): string {
  mkdirSync(ARTIFACTS, { recursive: true });
  return unexplained
    .map((u) => {
      const file = `${ARTIFACTS}fuzz-unexplained--${hashOf(u.input)}.bin`;
      writeFileSync(file, u.input);
      return `${u.why}\n  input (${u.input.length} bytes): ${hexOf(u.input)}\n  saved: ${file} (copy into test/corpus/ under its outcome once explained)`;
    })
    .join("\n");
}

// ---------------------------------------------------------------- tests

test("the rules walker agrees with the codec's hand-made cases (it can tell them apart)", () => {
  const T = [0x54, 2, 1, 0, 0x74, 0];
  const int1 = [1, 0, 0, 0, 0, 0, 0, 0, 1];
  const cases: [number[], Rule | null][] = [
    [[...T, 0x12, 0, ...int1, 5], null],
    [[], "empty-input"],
    [[...T, 0x12, 2, ...int1, 5], "indirect-flag-not-0-or-1"],
    [[0x54, 2, 0, 0, 0x74, 0, 0x12, 0, ...int1, 5], "no-primary-key"],
    [[0x54, 2, 2, 0, 0x74, 0, 0x12, 0, ...int1, 5], "pk-positions-not-1..k"],
    [[...T, 0x12, 0, ...int1, 0], "undefined-in-insert-or-delete"],
    [[...T, 0x17, 0, ...int1, 0, 0, 0], "update-changes-no-column"],
    [[...T, 0x12, 0, ...int1, 2, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0], "real-nan"],
    [[0x54, 0x80, 2, 1, 0, 0x74, 0], "varint-non-minimal"],
  ];
  for (const [input, expected] of cases) {
    const f = explain(Uint8Array.from(input));
    assert.deepEqual(f === null ? null : "rule" in f ? f.rule : f.structural, expected, hexOf(Uint8Array.from(input)));
  }
});

test("corpus: every saved input keeps its outcome", () => {
  const corpus = loadCorpus();
  assert.ok(corpus.length >= 10, `only ${corpus.length} corpus files`);
  const unexplained: Unexplained[] = [];
  for (const c of corpus) {
    const v = judge(c.bytes);
    if (typeof v !== "string") unexplained.push({ ...v, why: `${c.name}: ${v.why}` });
    else assert.equal(v, c.outcome, c.name);
  }
  assert.equal(unexplained.length, 0, report(unexplained));
});

test(`differential: ${INPUTS} mutated changesets, the relay's validator vs sqlite3changeset_next (seed ${SEED})`, () => {
  const bases = [...sqliteMade(), ...loadCorpus().filter((c) => c.outcome === "accept").map((c) => c.bytes)];
  for (const b of bases) assert.equal(judge(b), "accept", `base ${hexOf(b)}`);
  const rand = prng(SEED);
  const counts = new Map<Outcome, number>();
  const shortest = new Map<Outcome, Uint8Array>();
  const unexplained: Unexplained[] = [];
  const started = performance.now();
  for (let i = 0; i < INPUTS; i++) {
    const input = mutant(rand, bases);
    const v = judge(input);
    if (typeof v !== "string") {
      if (unexplained.length < 5) unexplained.push(shrink(v));
      continue;
    }
    counts.set(v, (counts.get(v) ?? 0) + 1);
    const s = shortest.get(v);
    if (!s || input.length < s.length) shortest.set(v, input);
  }
  const seconds = (performance.now() - started) / 1000;
  const rows = [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `  ${k.padEnd(32)} ${n}`);
  console.log(`decoder fuzz: ${INPUTS} inputs in ${seconds.toFixed(1)} s (seed ${SEED}; replay with RELAY_FUZZ_SEED=${SEED})\n${rows.join("\n")}`);

  if (process.env.RELAY_FUZZ_SAVE) {
    const have = new Set(loadCorpus().map((c) => c.outcome));
    for (const [outcome, b] of shortest) {
      if (!have.has(outcome)) writeFileSync(`${CORPUS}${outcome}--${hashOf(b)}.bin`, b);
    }
  }
  assert.equal(unexplained.length, 0, `unexplained disagreements (seed ${SEED}):\n${report(unexplained)}`);
  // The run must exercise both verdicts and the deliberate differences, or it proves little.
  assert.ok((counts.get("accept") ?? 0) > INPUTS / 50, "too few accepted inputs");
  assert.ok((counts.get("reject") ?? 0) > INPUTS / 50, "too few rejected inputs");
  const rulesSeen = RULES.filter((r) => counts.has(r));
  assert.ok(rulesSeen.length >= 10, `only ${rulesSeen.length} rules were exercised: ${rulesSeen.join(", ")}`);
});
