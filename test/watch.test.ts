/**
 * replica.watch(): re-run on the commits that can change a query's rows
 * (local writes, sync steps), never on others, once per burst; the tables a
 * query reads come from SQLite's authorizer (both drivers). Also sync
 * progress over a 10,000-entry bootstrap.
 *
 * Most watched queries select `random() AS nonce`: every re-run then returns
 * different rows and calls back, so counting callbacks counts re-runs (an
 * equal result would otherwise hide a needless re-run).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { openDriver } from "../client/drivers/index.ts";
import type { DriverKind, Row } from "../client/drivers/types.ts";
import type { Replica, SyncProgress } from "../client/index.ts";
import type { Watches } from "../client/watch.ts";
import { rowsEqual } from "../client/watch.ts";
import { useRelay } from "./support/fixture.ts";
import { replica, TODO_SCHEMA } from "./support/replicas.ts";

const relay = useRelay();
const KINDS: readonly DriverKind[] = ["node", "wasm"];

const SCHEMA = [
  ...TODO_SCHEMA,
  "CREATE TABLE IF NOT EXISTS tag(todo TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (todo, name))",
  "CREATE TABLE IF NOT EXISTS other(id INTEGER PRIMARY KEY, v TEXT)",
  "CREATE VIEW IF NOT EXISTS tagged AS SELECT todo.title, tag.name FROM todo JOIN tag ON tag.todo = todo.id",
];

/** Every watch callback, in order. */
function recorder<T extends Row = Row>() {
  const calls: T[][] = [];
  return { calls, fn: (rows: T[]) => void calls.push(rows) };
}

/** Resolves after every re-run already queued on the replica's lock has called back. */
async function settled(r: Replica): Promise<void> {
  await r.query("SELECT 1");
  await r.query("SELECT 1");
}

function watchCount(r: Replica): number {
  return (r as unknown as { watches: Watches }).watches.size;
}

async function pair(name: string, kind: DriverKind): Promise<{ a: Replica; b: Replica }> {
  const db = relay.db(name);
  const a = await replica(relay, db, `${name}-a`, "node", { schema: SCHEMA });
  const b = await replica(relay, db, `${name}-b`, kind, { schema: SCHEMA });
  // The schema's entry (seq 1) goes first: the tests count the entries after it.
  await a.sync();
  await b.sync();
  return { a, b };
}

for (const kind of KINDS) {
  describe(`${kind} driver: tablesRead from SQLite's authorizer`, () => {
    it("names the tables of joins, subqueries, CTEs and views (their base tables), and nothing for a constant", async () => {
      const d = await openDriver(kind, ":memory:");
      try {
        d.exec(SCHEMA.join(";"));
        const read = (sql: string) => d.tablesRead(sql)!.filter((t) => t !== "tagged").sort();
        assert.deepEqual(read("SELECT count(*) FROM todo"), ["todo"]);
        assert.deepEqual(read("SELECT t.title FROM todo t JOIN tag ON tag.todo = t.id"), ["tag", "todo"]);
        assert.deepEqual(read("SELECT * FROM todo WHERE id IN (SELECT todo FROM tag)"), ["tag", "todo"]);
        assert.deepEqual(read("WITH c AS (SELECT * FROM other) SELECT * FROM c"), ["other"]);
        assert.deepEqual(read("SELECT * FROM tagged"), ["tag", "todo"]);
        assert.deepEqual(read("SELECT 1"), []);
        // The statement cache still works after (the wasm driver sets the authorizer only for this).
        d.run("INSERT INTO other(v) VALUES ('x')");
        assert.deepEqual(d.all("SELECT v FROM other").map((r) => ({ ...r })), [{ v: "x" }]);
      } finally {
        d.close();
      }
    });
  });

  describe(`watch, ${kind} driver`, () => {
    it("calls back at once, again after a remote change to its table, and only once for one sync step", async () => {
      const { a, b } = await pair(`remote-${kind}`, kind);
      const seen = recorder<{ id: string; nonce: number }>();
      b.watch("SELECT id, random() AS nonce FROM todo ORDER BY id", [], seen.fn);
      await settled(b);
      assert.equal(seen.calls.length, 1);
      assert.deepEqual(seen.calls[0], []);

      for (let i = 0; i < 20; i++) await a.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`t${i}`, `todo ${i}`]);
      await a.sync();
      const ev = await b.sync(); // one page: one step
      assert.equal(ev.pulled, 20);
      await settled(b);
      assert.equal(seen.calls.length, 2, "one re-run for one sync step");
      assert.equal(seen.calls[1]!.length, 20);
    });

    it("does not re-run for a change to a table it does not read, local or remote", async () => {
      const { a, b } = await pair(`unrelated-${kind}`, kind);
      const seen = recorder();
      b.watch("SELECT random() AS nonce, count(*) AS n FROM todo", undefined, seen.fn);
      await settled(b);
      await a.exec("INSERT INTO other(v) VALUES ('remote')");
      await a.sync();
      assert.equal((await b.sync()).pulled, 1);
      await b.exec("INSERT INTO other(v) VALUES ('local')");
      await settled(b);
      assert.equal(seen.calls.length, 1, "only the first call");
      await b.exec("INSERT INTO todo(id) VALUES ('mine')");
      await settled(b);
      assert.equal(seen.calls.length, 2, "a change to its table re-runs it");
    });

    it("coalesces a burst of local writes into one re-run, and skips the callback when the rows did not change", async () => {
      const { b } = await pair(`burst-${kind}`, kind);
      const nonce = recorder();
      const plain = recorder();
      b.watch("SELECT random() AS nonce FROM todo", undefined, nonce.fn);
      b.watch("SELECT count(*) AS n FROM todo WHERE done = 1", undefined, plain.fn);
      await settled(b);
      await Promise.all(Array.from({ length: 10 }, (_, i) => b.exec("INSERT INTO todo(id) VALUES (?)", [`burst${i}`])));
      await settled(b);
      assert.equal(nonce.calls.length, 2, "ten queued commits, one re-run");
      assert.equal(plain.calls.length, 1, "re-run, same rows: no callback");
      await b.exec("UPDATE todo SET done = 1 WHERE id = 'burst3'");
      await settled(b);
      assert.deepEqual(plain.calls.at(-1), [{ n: 1 }]);
    });

    it("watches a join and a view through their base tables", async () => {
      const { a, b } = await pair(`join-${kind}`, kind);
      const join = recorder<{ title: string; name: string }>();
      const view = recorder<{ title: string; name: string }>();
      b.watch("SELECT todo.title, tag.name FROM todo JOIN tag ON tag.todo = todo.id ORDER BY 1, 2", [], join.fn);
      b.watch("SELECT title, name FROM tagged ORDER BY 1, 2", [], view.fn);
      await a.exec("INSERT INTO todo(id, title) VALUES ('1', 'milk')");
      await a.sync();
      await b.sync();
      await settled(b);
      assert.equal(join.calls.length, 1, "no tag yet: same (empty) rows");
      await a.exec("INSERT INTO tag VALUES ('1', 'shop')");
      await a.sync();
      await b.sync();
      await settled(b);
      for (const w of [join, view]) assert.deepEqual(w.calls.at(-1), [{ title: "milk", name: "shop" }]);
      await a.exec("UPDATE todo SET title = 'oat milk' WHERE id = '1'");
      await a.sync();
      await b.sync();
      await settled(b);
      for (const w of [join, view]) assert.deepEqual(w.calls.at(-1), [{ title: "oat milk", name: "shop" }]);
      assert.equal(view.calls.length, 3);
    });

    it("stops after unsubscribe and leaves nothing behind", async () => {
      const { a, b } = await pair(`unsub-${kind}`, kind);
      const seen = recorder();
      const stop = b.watch("SELECT random() AS nonce FROM todo", undefined, seen.fn);
      const other = b.watch("SELECT * FROM todo WHERE id = ?", ["x"], () => {});
      await settled(b);
      assert.equal(watchCount(b), 2);
      stop();
      other();
      assert.equal(watchCount(b), 0);
      await b.exec("INSERT INTO todo(id) VALUES ('local')");
      await a.exec("INSERT INTO todo(id) VALUES ('remote')");
      await a.sync();
      await b.sync();
      await settled(b);
      assert.equal(seen.calls.length, 1);
    });
  });
}

describe("watch errors and lifecycle", () => {
  it("a query that cannot compile is reported once and ends the watch", async () => {
    const { b } = await pair("bad-sql", "node");
    const errors: Error[] = [];
    b.watch("SELECT * FROM nowhere", undefined, () => assert.fail("no rows"), { onError: (e) => errors.push(e) });
    await settled(b);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /no such table/);
    assert.equal(watchCount(b), 0);
  });

  it("closing the replica ends its watches", async () => {
    const { b } = await pair("close", "node");
    b.watch("SELECT * FROM todo", undefined, () => {});
    await settled(b);
    await b.close();
    assert.equal(watchCount(b), 0);
    assert.throws(() => b.watch("SELECT 1", undefined, () => {}), /closed/);
  });

  it("the change event names the tables a commit changed", async () => {
    const { a, b } = await pair("tables", "node");
    const local: string[][] = [];
    const remote: string[][] = [];
    a.on("change", (e) => local.push(e.tables));
    b.on("change", (e) => remote.push(e.tables.sort()));
    await a.transaction(async (tx) => {
      await tx.exec("INSERT INTO todo(id) VALUES ('1')");
      await tx.exec("INSERT INTO tag VALUES ('1', 'x')");
    });
    await a.exec("INSERT INTO other(v) VALUES ('y')");
    await a.sync();
    await b.sync();
    assert.deepEqual(local, [["todo", "tag"], ["other"]]);
    assert.deepEqual(remote, [["other", "tag", "todo"]]);
  });

  it("rowsEqual compares values, blobs byte for byte, and columns", () => {
    assert.ok(rowsEqual([{ a: 1, b: new Uint8Array([1, 2]) }], [{ a: 1, b: new Uint8Array([1, 2]) }]));
    assert.ok(!rowsEqual([{ a: 1, b: new Uint8Array([1, 2]) }], [{ a: 1, b: new Uint8Array([1, 3]) }]));
    assert.ok(!rowsEqual([{ a: 1 }], [{ a: 1, b: null }]));
    assert.ok(!rowsEqual([{ a: 1n }], [{ a: 1 }]));
    assert.ok(!rowsEqual([{ a: 1 }], [{ a: 1 }, { a: 1 }]));
  });
});

describe("watches on local tables (not in any changeset)", () => {
  const FTS = [
    "CREATE TABLE IF NOT EXISTS doc(id TEXT PRIMARY KEY, body TEXT)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS doc_fts USING fts5(body, content='doc', content_rowid='rowid')",
    "CREATE TRIGGER IF NOT EXISTS doc_fts_ai AFTER INSERT ON doc BEGIN INSERT INTO doc_fts(rowid, body) VALUES (NEW.rowid, NEW.body); END",
    "CREATE TABLE IF NOT EXISTS draft(body TEXT)",
  ];

  for (const kind of KINDS) {
    it(`a full-text index kept by a trigger follows remote rows; a declared local table follows local writes (${kind})`, async () => {
      const db = relay.db(`local-${kind}`);
      const a = await replica(relay, db, `local-a-${kind}`, "node", { schema: FTS, local: ["draft"] });
      const b = await replica(relay, db, `local-b-${kind}`, kind, { schema: FTS, local: ["draft"] });
      const found = recorder<{ body: string }>();
      const drafts = recorder<{ body: string }>();
      b.watch("SELECT body FROM doc_fts WHERE doc_fts MATCH ? ORDER BY body", ["milk"], found.fn);
      b.watch("SELECT body FROM draft ORDER BY body", [], drafts.fn);
      await a.exec("INSERT INTO doc VALUES ('1', 'buy milk')");
      await a.sync();
      await b.sync();
      await settled(b);
      assert.deepEqual(found.calls.at(-1), [{ body: "buy milk" }], "the trigger's index write during the sync step");
      await b.exec("INSERT INTO draft VALUES ('unsent')");
      await settled(b);
      assert.deepEqual(drafts.calls.at(-1), [{ body: "unsent" }], "a write to a local table alone");
      assert.equal(b.status().pending, 0);
    });
  }
});

describe("watches across a schema version from the log", () => {
  const V1 = [
    "CREATE TABLE todo(id TEXT PRIMARY KEY)",
    "CREATE TABLE other(id TEXT PRIMARY KEY)",
    "CREATE VIEW listed AS SELECT id FROM todo",
  ];
  // The view now reads another table: a watch on it must learn that.
  const V2 = ["DROP VIEW listed", "CREATE VIEW listed AS SELECT id FROM other"];

  for (const kind of KINDS) {
    it(`a watch re-runs at the step that runs the version, and follows the tables its query reads after it (${kind})`, async () => {
      const db = relay.db(`versions-${kind}`);
      const b = await replica(relay, db, `versions-b-${kind}`, kind, { migrations: [V1] });
      await b.sync();
      const seen = recorder<{ id: string }>();
      b.watch("SELECT id FROM listed ORDER BY id", [], seen.fn);
      await settled(b);
      assert.deepEqual(seen.calls, [[]]);

      const a = await replica(relay, db, `versions-a-${kind}`, "node", { migrations: [V1, V2] });
      const changed: string[][] = [];
      b.on("change", (e) => changed.push([...e.tables].sort()));
      await a.exec("INSERT INTO other VALUES ('o1')");
      await a.sync();
      await b.sync(); // runs V2, then applies a's write
      await settled(b);
      assert.equal(b.status().schemaVersion, 2);
      assert.deepEqual(seen.calls.at(-1), [{ id: "o1" }], "the step that ran the version re-ran the watch");
      assert.deepEqual(changed, [["other", "todo"]], "its change event names every table (views are not tables)");

      await a.exec("INSERT INTO other VALUES ('o2')");
      await a.sync();
      await b.sync();
      await settled(b);
      assert.deepEqual(seen.calls.at(-1), [{ id: "o1" }, { id: "o2" }], "a later change to the table the view reads now");
      const calls = seen.calls.length;
      await a.exec("INSERT INTO todo VALUES ('t1')");
      await a.sync();
      await b.sync();
      await settled(b);
      assert.equal(seen.calls.length, calls, "nor the table it read before");
    });
  }
});

describe("sync progress", () => {
  it("a 10,000-entry bootstrap reports entries and bytes done against the entries expected, page by page", async () => {
    const db = relay.db("bootstrap");
    const a = await replica(relay, db, "boot-a", "node");
    for (let i = 0; i < 10_000; i++) await a.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`e${i}`, `entry ${i}`]);
    await a.sync();
    const b = await replica(relay, db, "boot-b", "node");
    const events: SyncProgress[] = [];
    const statuses: (SyncProgress | null)[] = [];
    b.on("progress", (p) => {
      events.push(p);
      statuses.push(b.status().progress);
    });
    assert.equal(b.status().progress, null);
    const ev = await b.sync();
    // The schema's entry (seq 1) and the 10,000 writes.
    const total = 10_001;
    assert.equal(ev.pulled, total);
    assert.ok(events.length >= 2, `one event per page, got ${events.length}`);
    assert.deepEqual(statuses, events, "status() says the same as the events");
    for (let i = 0; i < events.length; i++) {
      const p = events[i]!;
      assert.equal(p.entriesExpected, total);
      assert.equal(p.bytesExpected, null);
      if (i > 0) {
        assert.ok(p.entries > events[i - 1]!.entries);
        assert.ok(p.bytes > events[i - 1]!.bytes);
      }
    }
    assert.equal(events.at(-1)!.entries, total);
    assert.equal(b.status().progress, null, "no pull in progress");

    // A sync of one page reports none.
    await a.exec("INSERT INTO todo(id) VALUES ('one more')");
    await a.sync();
    await b.sync();
    assert.equal(events.at(-1)!.entries, total);
    assert.equal(events.length, statuses.length);
  });
});
