import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openDriver } from "../client/drivers/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { applyAllClean, SchemaCache } from "../client/apply.ts";
import { rebase } from "../client/rebase.ts";
import { SchemaState } from "../client/migrate.ts";
import * as store from "../client/store.ts";
import { changesetTables, decodeChangeset, tableBlocks, validateChangeset, type TableHeader } from "../protocol/changeset.ts";
import { RelayError } from "../protocol/errors.ts";
import type { LogEntry } from "../protocol/messages.ts";

/**
 * A page of log entries applied with each table header decoded once and
 * consecutive blocks of one table merged under one header (apply.ts
 * applyAllClean, changeset.ts tableBlocks) gives what applying the entries
 * one at a time gives, on both drivers.
 */
const SCHEMA = [
  "CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT, n INTEGER)",
  "CREATE TABLE b(k TEXT, j INTEGER, w BLOB, PRIMARY KEY(j, k)) WITHOUT ROWID",
];

/** A deterministic stream of numbers in [0, 1). */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => ((x = (x * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

/** `n` transactions of inserts, updates and deletes on a and b, captured by SQLite's session extension. */
function capturedLog(n: number, seed: number): LogEntry[] {
  const src = new DatabaseSync(":memory:");
  for (const s of SCHEMA) src.exec(s);
  const rnd = prng(seed);
  const pick = (k: number) => Math.floor(rnd() * k);
  const log: LogEntry[] = [];
  for (let seq = 1; log.length < n; seq++) {
    const session = src.createSession();
    const statements = 1 + pick(3);
    for (let i = 0; i < statements; i++) {
      const id = 1 + pick(40);
      switch (pick(6)) {
        case 0:
        case 1:
          src.prepare("INSERT OR REPLACE INTO a VALUES (?, ?, ?)").run(id, `v${seq}-${i}`, pick(100));
          break;
        case 2:
          src.prepare("UPDATE a SET n = n + 1 WHERE id = ?").run(id);
          break;
        case 3:
          src.prepare("DELETE FROM a WHERE id = ?").run(id);
          break;
        case 4:
          src.prepare("INSERT OR REPLACE INTO b VALUES (?, ?, ?)").run(`k${id % 7}`, id, new Uint8Array([seq & 255, i]));
          break;
        default:
          src.prepare("DELETE FROM b WHERE j = ?").run(id);
      }
    }
    const changeset = session.changeset();
    session.close();
    if (changeset.byteLength > 0) log.push({ seq: log.length + 1, client: `w${seq % 3}`, cseq: seq, changeset, ts: 0 });
  }
  return log;
}

async function fresh(kind: DriverKind) {
  const d = await openDriver(kind, ":memory:");
  for (const s of SCHEMA) d.exec(s);
  store.migrate(d);
  return { d, schema: new SchemaCache(d) };
}

function dump(d: Awaited<ReturnType<typeof fresh>>["d"]) {
  return {
    a: d.all("SELECT * FROM a ORDER BY id").map((r) => ({ ...r })),
    b: d.all("SELECT k, j, hex(w) AS w FROM b ORDER BY j, k").map((r) => ({ ...r })),
  };
}

/** The log replayed in steps of the given sizes (the last repeats), as rebase runs them. */
async function replay(kind: DriverKind, log: LogEntry[], sizes: number[]) {
  const { d, schema } = await fresh(kind);
  const conflicts: string[] = [];
  for (let i = 0, s = 0; i < log.length; s++) {
    const step = log.slice(i, i + sizes[Math.min(s, sizes.length - 1)]!);
    i += step.length;
    d.exec("BEGIN");
    conflicts.push(...rebase(d, "me", step, {}, schema, new SchemaState(d)).conflicts.map((c) => `${c.seq}:${c.kind}`));
    d.exec("COMMIT");
  }
  const out = { rows: dump(d), conflicts };
  d.close();
  return out;
}

describe("a page applied with each table header read once", () => {
  it("tableBlocks: every block in order, each distinct header decoded and reported once", () => {
    const log = capturedLog(60, 7);
    const parts = log.map((e) => e.changeset);
    const seen: TableHeader[] = [];
    const blocks: { part: number; start: number; body: number; end: number; header: TableHeader }[] = [];
    tableBlocks(parts, (part, start, body, end, header, first) => {
      if (first) seen.push(header);
      else assert.ok(seen.includes(header), "a repeated header is the object reported first");
      blocks.push({ part, start, body, end, header });
    });
    assert.deepEqual(seen.map((h) => h.name).sort(), ["a", "b"], "two tables, two headers decoded");
    // The blocks tile each changeset, and their headers are what the full reader finds.
    parts.forEach((bytes, part) => {
      const mine = blocks.filter((b) => b.part === part);
      assert.equal(mine[0]!.start, 0);
      mine.forEach((b, i) => assert.equal(b.end, mine[i + 1]?.start ?? bytes.byteLength));
      assert.deepEqual(mine.map((b) => [b.header.name, [...b.header.pkRaw!]]), changesetTables(bytes).map((t) => [t.name, [...t.pkRaw!]]));
      // Each block is a changeset on its own.
      for (const b of mine) validateChangeset(bytes.subarray(b.start, b.end));
    });
  });

  it("tableBlocks refuses what validateChangeset refuses, in any part, even after its header was seen", () => {
    const [e1, e2] = capturedLog(2, 3).map((e) => e.changeset) as [Uint8Array, Uint8Array];
    const codeOf = (f: () => unknown) => {
      try {
        f();
        return "ok";
      } catch (e) {
        return e instanceof RelayError ? e.code : String(e);
      }
    };
    const truncated = e2.subarray(0, e2.byteLength - 1);
    assert.equal(codeOf(() => validateChangeset(truncated)), "malformed_changeset");
    assert.equal(codeOf(() => tableBlocks([e1, truncated], () => undefined)), "malformed_changeset");
    assert.equal(codeOf(() => tableBlocks([e1, new Uint8Array([0x50, 1, 1, 0x61, 0])], () => undefined)), "malformed_changeset");
    assert.equal(codeOf(() => tableBlocks([e1, new Uint8Array(0), e2], () => undefined)), "ok", "empty entries are skipped");
  });

  for (const kind of ["node", "wasm"] as const) {
    it(`${kind}: grouped into pages (merged headers) equals one entry at a time, for many groupings`, async () => {
      const log = capturedLog(300, 11);
      const oneByOne = await replay(kind, log, [1]);
      assert.ok(oneByOne.rows.a.length > 0 && oneByOne.rows.b.length > 0);
      for (const sizes of [[300], [1000], [2, 5, 17, 64], [3], [128, 1]]) {
        assert.deepEqual(await replay(kind, log, sizes), oneByOne, `steps of ${sizes.join(",")}`);
      }
    });

    it(`${kind}: a page of conflict-free entries goes in as one apply, with one header per run of a table`, async () => {
      const log = capturedLog(200, 5);
      const { d, schema } = await fresh(kind);
      // Applied whole onto an empty replica, the log conflicts with nothing only if it starts from nothing too: it does.
      d.exec("BEGIN");
      assert.equal(applyAllClean(d, log.map((e) => e.changeset), schema), true);
      d.exec("COMMIT");
      const together = dump(d);
      d.close();
      assert.deepEqual(together, (await replay(kind, log, [1])).rows);
    });
  }

  it("the same table with two different headers in one page (a column added between entries) is not grouped", async () => {
    const src = new DatabaseSync(":memory:");
    src.exec("CREATE TABLE c(id INTEGER PRIMARY KEY, x TEXT)");
    const capture = (sql: string) => {
      const s = src.createSession();
      src.exec(sql);
      const cs = s.changeset();
      s.close();
      return cs;
    };
    const e1 = capture("INSERT INTO c VALUES (1, 'one')");
    src.exec("ALTER TABLE c ADD COLUMN y TEXT");
    const e2 = capture("INSERT INTO c VALUES (2, 'two', 'deux')");
    assert.notDeepEqual(decodeChangeset(e1).tables[0]!.pk, decodeChangeset(e2).tables[0]!.pk);
    for (const kind of ["node", "wasm"] as const) {
      const d = await openDriver(kind, ":memory:");
      d.exec("CREATE TABLE c(id INTEGER PRIMARY KEY, x TEXT, y TEXT)");
      store.migrate(d);
      const schema = new SchemaCache(d);
      d.exec("BEGIN");
      assert.equal(applyAllClean(d, [e1, e2], schema), false, `${kind}: left to the one-by-one path`);
      rebase(d, "me", [
        { seq: 1, client: "w", cseq: 1, changeset: e1, ts: 0 },
        { seq: 2, client: "w", cseq: 2, changeset: e2, ts: 0 },
      ], {}, schema, new SchemaState(d));
      d.exec("COMMIT");
      assert.deepEqual(d.all("SELECT * FROM c ORDER BY id").map((r) => ({ ...r })), [{ id: 1, x: "one", y: null }, { id: 2, x: "two", y: "deux" }]);
      d.close();
    }
  });
});
