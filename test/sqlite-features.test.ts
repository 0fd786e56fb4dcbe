/**
 * SQLite as apps use it (issue 14): triggers, FTS5, local-only tables, keys
 * from relay_id(), generated columns, WITHOUT ROWID. Every case runs on both
 * drivers and on mixed pairs, and ends with every replica equal to a fresh
 * replica replaying the log.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RelayError, type Replica, type ReplicaOptions, type ReplicaWarning } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { changesetTables } from "../protocol/changeset.ts";
import { pullAll } from "./support/http.ts";
import { startRelay, type TestRelay } from "./support/relay.ts";
import { closeReplicas, replica } from "./support/replicas.ts";

let relay: TestRelay;
let dir: string;
before(async () => {
  relay = await startRelay();
  dir = mkdtempSync(join(tmpdir(), "sqlite-features-"));
});
after(async () => {
  await closeReplicas();
  await relay.close();
  rmSync(dir, { recursive: true, force: true });
});

let dbCounter = 0;
const freshDb = (name: string) => `${name}-${++dbCounter}`;

/** The replicated tables' rows, every value quoted (1, 1.0 and '1' differ), in key order. */
async function state(r: Replica, tables: string[]): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const t of tables) {
    const cols = (await r.query<{ name: string }>(`SELECT name FROM pragma_table_xinfo('${t}') ORDER BY cid`)).map((c) => c.name);
    const rows = await r.query<{ row: string }>(`SELECT ${cols.map((c) => `quote("${c}")`).join(" || '|' || ")} AS row FROM "${t}"`);
    out[t] = rows.map((x) => x.row).sort();
  }
  return out;
}

/**
 * Sync until quiet, then check that every replica holds what a fresh replica
 * (of the other driver than the first) gets by replaying the log.
 */
async function converged(db: string, rs: Replica[], tables: string[], opts: Partial<ReplicaOptions>): Promise<Record<string, string[]>> {
  for (let pass = 0; pass < 2; pass++) for (const r of rs) await r.sync();
  const kind: DriverKind = rs[0]!.status().driver === "node" ? "wasm" : "node";
  const fresh = await replica(relay, db, `fresh-${dbCounter}`, kind, opts);
  await fresh.sync();
  const expected = await state(fresh, tables);
  await fresh.close();
  for (const r of rs) {
    assert.equal(r.status().pending, 0, `${r.clientId}: outbox not empty`);
    assert.deepEqual(await state(r, tables), expected, `${r.clientId} differs from a fresh replay of the log`);
  }
  return expected;
}

const rows = (s: Record<string, string[]>, t: string) => s[t]!.length;

/** The log's data entries (schema entries carry statements, no changeset). */
const dataEntries = (log: { changeset: Uint8Array; schema?: string[] }[]) => log.filter((e) => e.schema === undefined);

const PAIRS: [DriverKind, DriverKind][] = [["node", "node"], ["wasm", "wasm"], ["node", "wasm"], ["wasm", "node"]];

const AUDIT = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT)",
  "CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, what TEXT)",
  "CREATE TABLE IF NOT EXISTS counter(k TEXT PRIMARY KEY, n INTEGER NOT NULL)",
  "CREATE TABLE IF NOT EXISTS tag(todo TEXT, tag TEXT, PRIMARY KEY(todo, tag)) WITHOUT ROWID",
  // Insert, update and delete from triggers.
  `CREATE TRIGGER IF NOT EXISTS todo_added AFTER INSERT ON todo BEGIN
     INSERT INTO audit(id, what) VALUES (relay_id(), 'added ' || NEW.id);
     INSERT INTO counter(k, n) VALUES ('todos', 1) ON CONFLICT(k) DO UPDATE SET n = n + 1;
   END`,
  `CREATE TRIGGER IF NOT EXISTS todo_removed AFTER DELETE ON todo BEGIN
     INSERT INTO audit(id, what) VALUES (relay_id(), 'removed ' || OLD.id);
     UPDATE counter SET n = n - 1 WHERE k = 'todos';
     DELETE FROM tag WHERE todo = OLD.id;
   END`,
  `CREATE TRIGGER IF NOT EXISTS todo_renamed AFTER UPDATE OF title ON todo WHEN OLD.title IS NOT NEW.title BEGIN
     INSERT INTO audit(id, what) VALUES (relay_id(), 'renamed ' || NEW.id);
   END`,
];

const CASCADE = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT)",
  "CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, what TEXT)",
  "CREATE TABLE IF NOT EXISTS inbox(id TEXT PRIMARY KEY, note TEXT)",
  "CREATE TABLE IF NOT EXISTS stats(k TEXT PRIMARY KEY, n INTEGER NOT NULL)",
  // One trigger writes two tables; a trigger on one of them writes a third.
  `CREATE TRIGGER IF NOT EXISTS fan_out AFTER INSERT ON todo BEGIN
     INSERT INTO audit(id, what) VALUES (relay_id(), NEW.id);
     INSERT INTO inbox(id, note) VALUES ('for ' || NEW.id, NEW.title);
   END`,
  `CREATE TRIGGER IF NOT EXISTS count_audit AFTER INSERT ON audit BEGIN
     INSERT INTO stats(k, n) VALUES ('audit', 1) ON CONFLICT(k) DO UPDATE SET n = n + 1;
   END`,
];

const RAISING = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT)",
  `CREATE TRIGGER IF NOT EXISTS no_empty BEFORE INSERT ON todo WHEN NEW.title = '' BEGIN SELECT RAISE(ABORT, 'empty title'); END`,
  // Each replica may hold two todos; together they hold four, which every replica must accept.
  `CREATE TRIGGER IF NOT EXISTS at_most_two BEFORE INSERT ON todo WHEN (SELECT count(*) FROM todo) >= 2 BEGIN SELECT RAISE(ABORT, 'full'); END`,
];

const FTS = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT)",
  "CREATE VIRTUAL TABLE IF NOT EXISTS todo_fts USING fts5(title, content='todo', content_rowid='rowid')",
  "CREATE TRIGGER IF NOT EXISTS todo_fts_ai AFTER INSERT ON todo BEGIN INSERT INTO todo_fts(rowid, title) VALUES (NEW.rowid, NEW.title); END",
  "CREATE TRIGGER IF NOT EXISTS todo_fts_ad AFTER DELETE ON todo BEGIN INSERT INTO todo_fts(todo_fts, rowid, title) VALUES ('delete', OLD.rowid, OLD.title); END",
  `CREATE TRIGGER IF NOT EXISTS todo_fts_au AFTER UPDATE ON todo BEGIN
     INSERT INTO todo_fts(todo_fts, rowid, title) VALUES ('delete', OLD.rowid, OLD.title);
     INSERT INTO todo_fts(rowid, title) VALUES (NEW.rowid, NEW.title);
   END`,
];

const search = async (r: Replica, q: string) => (await r.query<{ title: string }>("SELECT title FROM todo_fts WHERE todo_fts MATCH ? ORDER BY title", [q])).map((x) => x.title);
/** FTS5's own check that the index matches its content table: throws if not. */
const ftsIntact = (r: Replica) => r.query("INSERT INTO todo_fts(todo_fts) VALUES ('integrity-check')");

const LOCAL = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT)",
  "CREATE TABLE IF NOT EXISTS draft(body TEXT)", // no primary key: fine, it is local
  "CREATE TABLE IF NOT EXISTS cache_users(k TEXT PRIMARY KEY, v)",
  "CREATE TABLE IF NOT EXISTS recent(todo TEXT)",
  "CREATE TRIGGER IF NOT EXISTS remember AFTER INSERT ON todo BEGIN INSERT INTO recent(todo) VALUES (NEW.id); END",
];

const NOTES = ["CREATE TABLE IF NOT EXISTS note(id INTEGER PRIMARY KEY, body TEXT, extra TEXT)"];

for (const [a, b] of PAIRS) {
  describe(`SQLite features, ${a} + ${b}`, () => {
    const open = (db: string, id: string, kind: DriverKind, opts: Partial<ReplicaOptions>) => replica(relay, db, `${id}-${dbCounter}`, kind, opts);

    it("an audit trigger (insert, update, delete in other tables) leaves its effects once", async () => {
      const db = freshDb("audit");
      const opts = { schema: AUDIT };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      await A.transaction(async (tx) => {
        await tx.exec("INSERT INTO todo VALUES ('a', 'milk')");
        await tx.exec("INSERT INTO tag VALUES ('a', 'shop'), ('a', 'home')");
      });
      await A.sync(), await B.sync();
      await B.exec("INSERT INTO todo VALUES ('b', 'eggs')");
      await B.sync(), await A.sync();
      // Concurrent, each firing triggers that the other replica replays.
      await B.exec("DELETE FROM todo WHERE id = 'a'");
      await A.exec("UPDATE todo SET title = 'brown eggs' WHERE id = 'b'");
      const s = await converged(db, [A, B], ["todo", "audit", "counter", "tag"], opts);
      assert.equal(rows(s, "audit"), 4, "added a, added b, removed a, renamed b: once each");
      assert.deepEqual(s.counter, ["'todos'|1"], "two inserts and a delete, one after the other: counted once each");
      assert.deepEqual(s.tag, [], "the delete trigger's cascade");
    });

    it("the issue's audit trigger with AUTOINCREMENT keys converges (one audit row replaced, and reported)", async () => {
      const db = freshDb("autoinc");
      const opts = {
        schema: [
          "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title)",
          "CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY AUTOINCREMENT, what)",
          "CREATE TRIGGER IF NOT EXISTS t AFTER INSERT ON todo BEGIN INSERT INTO audit(what) VALUES ('added ' || NEW.id); END",
        ],
      };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      await A.exec("INSERT INTO todo VALUES ('a', 1)");
      await B.exec("INSERT INTO todo VALUES ('b', 2)");
      const s = await converged(db, [A, B], ["todo", "audit"], opts);
      assert.equal(rows(s, "todo"), 2);
      assert.equal(rows(s, "audit"), 1, "both picked id 1: the later entry's row wins");
    });

    it("a trigger that cascades to two tables, and on through a trigger of one of them", async () => {
      const db = freshDb("cascade");
      const opts = { schema: CASCADE };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      await A.exec("INSERT INTO todo VALUES ('a', 'milk')");
      await B.exec("INSERT INTO todo VALUES ('b', 'eggs')");
      await B.sync(); // B's entry first in the log; A rebases over it
      await A.exec("INSERT INTO todo VALUES ('c', 'tea')");
      const s = await converged(db, [A, B], ["todo", "audit", "inbox", "stats"], opts);
      assert.deepEqual([rows(s, "todo"), rows(s, "audit"), rows(s, "inbox"), rows(s, "stats")], [3, 3, 3, 1], "each trigger's rows once");
    });

    it("a trigger that RAISEs refuses local writes but never a replayed entry", async () => {
      const db = freshDb("raise");
      const opts = { schema: RAISING };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      await assert.rejects(A.exec("INSERT INTO todo VALUES ('x', '')"), /empty title/);
      await A.exec("INSERT INTO todo VALUES ('a1', 'one'), ('a2', 'two')");
      await B.exec("INSERT INTO todo VALUES ('b1', 'one'), ('b2', 'two')");
      const s = await converged(db, [A, B], ["todo"], opts);
      assert.equal(rows(s, "todo"), 4, "each entry passed its origin's check; replicas accept it as it is");
      await assert.rejects(A.exec("INSERT INTO todo VALUES ('a3', 'three')"), /full/, "local writes are still checked");
      assert.equal(A.status().pending, 0);
    });

    it("an FTS5 index kept by triggers finds remote rows; the index itself never replicates", async () => {
      const db = freshDb("fts");
      const opts = { schema: FTS };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      await A.exec("INSERT INTO todo VALUES ('1', 'buy oat milk')");
      await A.sync();
      await B.exec("INSERT INTO todo VALUES ('2', 'call mum')"); // pending on B while A's entry arrives: undone and redone
      await B.sync();
      assert.deepEqual(await search(B, "milk"), ["buy oat milk"], "a remote insert is searchable");
      await A.sync();
      assert.deepEqual(await search(A, "mum"), ["call mum"]);
      await A.exec("UPDATE todo SET title = 'buy soy milk' WHERE id = '1'");
      await A.exec("DELETE FROM todo WHERE id = '2'");
      await converged(db, [A, B], ["todo"], opts);
      for (const r of [A, B]) {
        assert.deepEqual(await search(r, "milk"), ["buy soy milk"]);
        assert.deepEqual(await search(r, "oat OR mum"), []);
        await ftsIntact(r);
      }
      const log = await pullAll(relay.url, db, await relay.token("read", "checker", db));
      const tables = new Set(dataEntries(log).flatMap((e) => changesetTables(e.changeset).map((t) => t.name)));
      assert.deepEqual([...tables], ["todo"]);
    });

    it("declared local tables are writable, never pushed, and their triggers run on replay", async () => {
      const db = freshDb("local");
      const opts = { schema: LOCAL, local: ["draft", "cache_*", "recent"] };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      let changes = 0;
      A.on("change", () => changes++);
      await A.exec("INSERT INTO draft VALUES ('half a thought')");
      await A.exec("INSERT INTO cache_users VALUES ('u1', 'Ann')");
      assert.equal(A.status().pending, 0, "a transaction writing only local tables queues nothing");
      assert.equal(changes, 0);
      await A.transaction(async (tx) => {
        await tx.exec("INSERT INTO todo VALUES ('1', 'milk')");
        await tx.exec("UPDATE draft SET body = 'a whole thought'");
      });
      assert.equal(A.status().pending, 1);
      await converged(db, [A, B], ["todo"], opts);
      assert.deepEqual(await B.query("SELECT * FROM draft"), []);
      assert.deepEqual(await B.query("SELECT * FROM cache_users"), []);
      assert.deepEqual(await B.query("SELECT todo FROM recent"), [{ todo: "1" }], "a trigger writing only local tables runs on replay");
      const log = await pullAll(relay.url, db, await relay.token("read", "checker", db));
      assert.deepEqual(dataEntries(log).flatMap((e) => changesetTables(e.changeset).map((t) => t.name)), ["todo"]);

      const reader = await open(db, "reader", b, { ...opts, readOnly: true });
      await reader.exec("INSERT INTO draft VALUES ('mine')");
      await assert.rejects(reader.exec("INSERT INTO todo VALUES ('2', 'no')"), (e: unknown) => e instanceof RelayError && e.code === "read_only");
      assert.deepEqual(await reader.query("SELECT count(*) AS n FROM todo WHERE id = '2'"), [{ n: 0 }]);
    });

    it("2 replicas × 100 offline inserts keyed by relay_id() end with 200 rows everywhere", async () => {
      const db = freshDb("ids");
      const opts = { schema: NOTES };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      for (const r of [A, B]) {
        for (let i = 0; i < 100; i++) await r.exec("INSERT INTO note(id, body) VALUES (relay_id(), ?)", [`${r.clientId} ${i}`]);
      }
      const s = await converged(db, [A, B], ["note"], opts);
      assert.equal(rows(s, "note"), 200);
      assert.deepEqual([...(await A.conflicts()), ...(await B.conflicts())], []);
      const ids = (await A.query<{ id: number }>("SELECT id FROM note")).map((r) => r.id);
      assert.ok(ids.every((id) => Number.isSafeInteger(id) && id > 0), "safe positive integers");
      for (const r of [A, B]) {
        const own = (await r.query<{ id: number }>("SELECT id FROM note WHERE body LIKE ? ORDER BY rowid", [`${r.clientId} %`])).map((x) => x.id);
        assert.deepEqual(own, [...own].sort((x, y) => x - y), "one replica's keys increase");
      }
    });

    it("an INSERT that replaced another replica's row keeps the replaced row whole in the conflict record", async () => {
      const db = freshDb("replaced");
      const opts = { schema: NOTES };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      await A.exec("INSERT INTO note(body, extra) VALUES ('from A', x'00ff')"); // no id: SQLite picks 1 on both
      await B.exec("INSERT INTO note(body, extra) VALUES ('from B', 'b')");
      await A.sync(), await B.sync(), await A.sync();
      const [c] = await A.conflicts();
      assert.equal(c?.kind, "conflict");
      assert.deepEqual(c?.local, { id: 1, body: "from A", extra: new Uint8Array([0, 255]) });
      // The app puts it back under a key no replica will pick.
      await A.exec("INSERT INTO note(id, body, extra) VALUES (relay_id(), ?, ?)", [c!.local!.body!, c!.local!.extra!]);
      const s = await converged(db, [A, B], ["note"], opts);
      assert.equal(rows(s, "note"), 2);
    });

    it("generated columns and WITHOUT ROWID tables with composite keys", async () => {
      const db = freshDb("generated");
      const opts = {
        schema: [
          `CREATE TABLE IF NOT EXISTS line(o TEXT, n INTEGER, qty INTEGER, price REAL, total REAL GENERATED ALWAYS AS (qty * price) STORED,
             label TEXT AS (o || '#' || n) VIRTUAL, PRIMARY KEY(o, n)) WITHOUT ROWID`,
        ],
      };
      const A = await open(db, "a", a, opts), B = await open(db, "b", b, opts);
      await A.exec("INSERT INTO line(o, n, qty, price) VALUES ('x', 1, 2, 1.5), ('x', 2, 1, 4.0)");
      await B.exec("INSERT INTO line(o, n, qty, price) VALUES ('y', 1, 3, 2.0)");
      await A.sync(), await B.sync();
      await B.exec("UPDATE line SET qty = 10 WHERE o = 'x' AND n = 1");
      await A.exec("DELETE FROM line WHERE o = 'x' AND n = 2");
      const s = await converged(db, [A, B], ["line"], opts);
      assert.deepEqual(s.line, ["'x'|1|10|1.5|15.0|'x#1'", "'y'|1|3|2.0|6.0|'y#1'"]);
    });
  });
}

for (const kind of ["node", "wasm"] as DriverKind[]) {
  describe(`SQLite features on one ${kind} replica`, () => {
    it("a rowid-keyed replicated table gets one warning event naming it and the remedy", async () => {
      const db = freshDb("warn");
      const r = await replica(relay, db, `w-${dbCounter}`, kind, {
        schema: [
          ...NOTES,
          "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY)",
          "CREATE TABLE IF NOT EXISTS keyed(id INTEGER PRIMARY KEY DEFAULT (relay_id()), v) WITHOUT ROWID",
          "CREATE TABLE IF NOT EXISTS intkey(id INT PRIMARY KEY, v)",
          "CREATE TABLE IF NOT EXISTS composite(a INTEGER, b INTEGER, PRIMARY KEY(a, b))",
          "CREATE TABLE IF NOT EXISTS ui(id INTEGER PRIMARY KEY, v)",
        ],
        local: ["ui"],
      });
      const seen: ReplicaWarning[] = [];
      r.on("warning", (w) => seen.push(w));
      await new Promise((res) => setTimeout(res, 0));
      assert.deepEqual(seen.map((w) => [w.code, w.table]), [["rowid_key", "note"]]);
      assert.match(seen[0]!.message, /relay_id\(\)/);
      await r.exec("INSERT INTO note(body) VALUES ('x')");
      await r.sync();
      assert.equal(seen.length, 1, "once, at open");
      // The recommended key: filled by relay_id() without naming it.
      await r.exec("INSERT INTO keyed(v) VALUES ('auto')");
      const { id } = (await r.query<{ id: number }>("SELECT id FROM keyed"))[0]!;
      assert.ok(Number.isSafeInteger(id) && id > 2 ** 20, `relay_id() filled the key: ${id}`);
    });

    it("relay_id() continues after a reopen of the same file", { skip: kind === "wasm" && "wasm files need OPFS" }, async () => {
      const db = freshDb("reopen");
      const path = join(dir, `${db}.db`);
      const opts = { schema: NOTES, path };
      let r = await replica(relay, db, `r-${dbCounter}`, kind, opts);
      const { first } = (await r.query<{ first: number }>("SELECT relay_id() AS first"))[0]!;
      await r.exec("INSERT INTO note(id, body) VALUES (relay_id(), 'x')");
      await r.close();
      r = await replica(relay, db, `r-${dbCounter}`, kind, opts);
      await r.exec("INSERT INTO note(id, body) VALUES (relay_id(), 'y')");
      assert.deepEqual((await r.query<{ id: number }>("SELECT id FROM note ORDER BY id")).map((x) => x.id - first), [1, 2]);
    });

    it("a trigger that writes both local and replicated tables is refused at open", async () => {
      await assert.rejects(
        replica(relay, freshDb("mixed"), "m", kind, {
          schema: [...FTS.slice(0, 2), "CREATE TABLE IF NOT EXISTS log(id TEXT PRIMARY KEY)", "CREATE TRIGGER IF NOT EXISTS both AFTER INSERT ON todo BEGIN INSERT INTO todo_fts(rowid, title) VALUES (NEW.rowid, NEW.title); INSERT INTO log VALUES (NEW.id); END"],
        }),
        (e: unknown) => e instanceof RelayError && e.code === "mixed_trigger" && /"both"/.test(e.message),
      );
    });

    it("a trigger created after open (DDL through query) is guarded before the next replay", async () => {
      const db = freshDb("late");
      const opts = { schema: AUDIT.slice(0, 2) };
      const A = await replica(relay, db, `a-${dbCounter}`, kind, opts), B = await replica(relay, db, `b-${dbCounter}`, kind, opts);
      const trigger = "CREATE TRIGGER IF NOT EXISTS late AFTER INSERT ON todo BEGIN INSERT INTO audit VALUES (relay_id(), NEW.id); END";
      for (const r of [A, B]) await r.query(trigger);
      await A.exec("INSERT INTO todo VALUES ('a', 1)");
      await B.exec("INSERT INTO todo VALUES ('b', 2)");
      // The trigger is not in the log's schema: the fresh replay has only what the log holds.
      const s = await converged(db, [A, B], ["todo", "audit"], opts);
      assert.equal(rows(s, "audit"), 2);
    });

    it("a trigger a later schema version adds is guarded before anything is replayed over it: in the sync step and at open", async () => {
      const db = freshDb("versioned");
      const v1 = AUDIT.slice(0, 2);
      const v2 = ["CREATE TRIGGER added AFTER INSERT ON todo BEGIN INSERT INTO audit VALUES (relay_id(), 'added ' || NEW.id); END"];
      const versions = (m: string[][]) => ({ migrations: m });
      const file = join(dir, `${db}-c.db`);
      const A = await replica(relay, db, `a-${dbCounter}`, kind, versions([v1, v2]));
      const B = await replica(relay, db, `b-${dbCounter}`, kind, versions([v1]));
      let C = await replica(relay, db, `c-${dbCounter}`, "node", { ...versions([v1]), path: file });
      await A.exec("INSERT INTO todo VALUES ('a', 1)"); // its trigger's audit row is in the entry
      await B.exec("INSERT INTO todo VALUES ('b', 2)"); // pending on B while the log's v2 runs and A's entry is applied over it
      await C.exec("INSERT INTO todo VALUES ('c', 3)"); // pending on C when its app moves to v2 at open
      await A.sync();
      await C.close();
      C = await replica(relay, db, `c-${dbCounter}`, "node", { ...versions([v1, v2]), path: file });
      assert.deepEqual(await C.query("SELECT what FROM audit"), [], "re-applying a pending write at open fires no guarded trigger");
      const s = await converged(db, [A, B, C], ["todo", "audit"], versions([v1]));
      assert.equal(rows(s, "audit"), 1, "every replica, and the fresh replay, hold the one audit row A's write made");
      assert.equal(rows(s, "todo"), 3);
      assert.deepEqual((await B.query("SELECT what FROM audit")).map((r) => r.what), ["added a"], "the trigger ran where the write happened, only there");
    });
  });
}
