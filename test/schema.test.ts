/**
 * The schema in the log (issue 13, DESIGN.md invariant 10), end to end over
 * the real relay in workerd and both drivers: versions pushed as schema
 * entries and run by every replica at the same place in the log, pending
 * writes carried across versions, conflicting versions refused, and every
 * entry checked against the log's schema before it is stored.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { openReplica, RelayError, type DroppedEvent, type Replica, type ReplicaOptions } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { encode } from "../protocol/codec.ts";
import { useRelay } from "./support/fixture.ts";
import { pullAll, pushRaw } from "./support/http.ts";
import { dump } from "./support/replicas.ts";
import { captured } from "./support/captured.ts";

const relay = useRelay({ bindings: {} });

const V1 = ["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, note TEXT)"];
const V2 = ["ALTER TABLE todo ADD COLUMN done INTEGER NOT NULL DEFAULT 0", "CREATE TABLE tag(id TEXT PRIMARY KEY, todo TEXT, name TEXT)"];
const V3 = ["ALTER TABLE todo RENAME COLUMN title TO name", "ALTER TABLE todo DROP COLUMN note", "CREATE INDEX todo_done ON todo(done)"];

const opened: Replica[] = [];
async function open(db: string, client: string, driver: DriverKind, migrations: string[][], opts: Partial<ReplicaOptions> = {}): Promise<Replica> {
  const r = await openReplica({ url: relay.url, db, token: await relay.token("write", client, db), clientId: client, driver, migrations, backoff: { baseMs: 1, capMs: 5 }, ...opts });
  opened.push(r);
  return r;
}
const isCode = (code: string) => (e: unknown) => e instanceof RelayError && e.code === code;
const reader = (db: string) => relay.token("read", "reader", db);
const logOf = async (db: string) => pullAll(relay.url, db, await reader(db));

describe("a v1 → v2 → v3 history with replicas offline across all of it", () => {
  it("every replica, on both drivers, equals a fresh replay, and the offline writes land translated", async () => {
    const db = relay.db("history");
    const file = (name: string) => join(relay.dir, `${db}-${name}.db`);
    // Two old-app replicas (v1 only) and one whose app is upgraded while it is offline.
    const oldNode = await open(db, "old-node", "node", [V1]);
    const oldWasm = await open(db, "old-wasm", "wasm", [V1]);
    let upgraded = await open(db, "upgraded", "node", [V1], { path: file("upgraded") });
    await oldNode.exec("INSERT INTO todo VALUES ('s1', 'shared', 'n1'), ('s2', 'other', 'n2')");
    await oldNode.sync();
    for (const r of [oldWasm, upgraded]) await r.sync();

    // Offline, each holds v1 writes: inserts, an update of a shared row, a column v3 drops.
    await oldNode.exec("INSERT INTO todo VALUES ('a', 'from old node', 'lost note')");
    await oldWasm.exec("UPDATE todo SET title = 'renamed by old wasm', note = 'gone too' WHERE id = 's1'");
    await upgraded.exec("INSERT INTO todo(id, title, note) VALUES ('u', 'from upgraded', 'v3 drops this')");

    // Meanwhile the app moves on: v2, then v3, each with writes under it.
    const v2 = await open(db, "v2-wasm", "wasm", [V1, V2]);
    await v2.sync();
    await v2.exec("INSERT INTO todo(id, title, done) VALUES ('b', 'v2 row', 1)");
    await v2.exec("INSERT INTO tag VALUES ('t1', 'b', 'urgent')");
    await v2.sync();
    const v3 = await open(db, "v3-node", "node", [V1, V2, V3]);
    await v3.sync();
    await v3.exec("UPDATE todo SET name = 'v3 edit', done = 1 WHERE id = 's2'");
    await v3.sync();
    assert.equal(v3.status().schemaVersion, 3);

    // The upgraded app reopens offline: its pending v1 write is carried to v3 at open.
    await upgraded.close();
    upgraded = await open(db, "upgraded", "node", [V1, V2, V3], { path: file("upgraded") });
    const droppedAtOpen: DroppedEvent[] = [];
    upgraded.on("dropped", (x) => droppedAtOpen.push(x));
    assert.equal(upgraded.status().schemaVersion, 3);
    assert.deepEqual(await upgraded.query("SELECT id, name, done FROM todo WHERE id = 'u'"), [{ id: "u", name: "from upgraded", done: 0 }]);

    await new Promise((r) => setTimeout(r, 0));
    assert.deepEqual(droppedAtOpen, [{ cseq: 1, table: "todo", columns: ["note"] }], "reported to a listener added right after open");
    // The old apps come back: their pushes are outdated, the sync migrates them and pushes again.
    const dropped: DroppedEvent[] = [];
    for (const r of [oldNode, oldWasm]) r.on("dropped", (x) => dropped.push(x));
    for (const r of [oldNode, oldWasm, upgraded, v2, v3, oldNode, oldWasm, upgraded, v2, v3]) await r.sync();

    assert.deepEqual(dropped.map((x) => [x.table, x.columns]).sort(), [["todo", ["note"]], ["todo", ["note"]]], "the values v3 has no column for are reported");
    for (const r of [oldNode, oldWasm, upgraded, v2, v3]) {
      assert.equal(r.status().pending, 0);
      assert.equal(r.status().schemaVersion, 3, "old apps run the log's DDL");
    }
    const freshNode = await openReplica({ url: relay.url, db, token: await reader(db), driver: "node" });
    const freshWasm = await openReplica({ url: relay.url, db, token: await reader(db), driver: "wasm" });
    opened.push(freshNode, freshWasm);
    await freshNode.sync();
    await freshWasm.sync();
    const expected = await dump(freshNode);
    assert.equal(await dump(freshWasm), expected);
    for (const r of [oldNode, oldWasm, upgraded, v2, v3]) assert.equal(await dump(r), expected, `${r.clientId} differs from a fresh replay`);
    assert.deepEqual(await freshNode.query("SELECT id, name, done FROM todo ORDER BY id"), [
      { id: "a", name: "from old node", done: 0 },
      { id: "b", name: "v2 row", done: 1 },
      { id: "s1", name: "renamed by old wasm", done: 0 },
      { id: "s2", name: "v3 edit", done: 1 },
      { id: "u", name: "from upgraded", done: 0 },
    ]);
    assert.deepEqual(await freshNode.query("SELECT * FROM tag"), [{ id: "t1", todo: "b", name: "urgent" }]);
    assert.deepEqual(await freshNode.query("SELECT name FROM sqlite_schema WHERE name = 'todo_done'"), [{ name: "todo_done" }]);

    const log = await logOf(db);
    assert.deepEqual(log.filter((e) => e.schema).map((e) => e.v), [1, 2, 3], "each version once, in order");
    let version = 0;
    for (const e of log) {
      if (e.schema) version = e.v;
      else assert.equal(e.v, version, `seq ${e.seq} is captured under the version before it`);
    }
    for (const r of opened.splice(0)) await r.close();
  });
});

describe("versions never change", () => {
  it("two replicas racing to push different version 2s: one wins, the other gets schema_conflict and keeps its write", async () => {
    const db = relay.db("race");
    const a = await open(db, "a", "node", [V1, V2]);
    const b = await open(db, "b", "wasm", [V1, ["ALTER TABLE todo ADD COLUMN priority INTEGER"]]);
    await a.exec("INSERT INTO todo(id, title, done) VALUES ('1', 'a', 1)");
    await b.exec("INSERT INTO todo(id, title, priority) VALUES ('2', 'b', 5)");
    await a.sync();
    const errors: RelayError[] = [];
    b.on("error", (e) => errors.push(e));
    await assert.rejects(b.sync(), isCode("schema_conflict"));
    assert.equal(b.status().pending, 1, "nothing lost");
    assert.deepEqual(errors.map((e) => e.code), ["schema_conflict"]);
    const log = await logOf(db);
    assert.deepEqual(log.map((e) => [e.cseq, e.v]), [[0, 1], [0, 2], [1, 2]]);
    for (const r of opened.splice(0)) await r.close();
  });

  it("a replica whose local version differs from the log's learns it on pull, with schema_conflict, and changes nothing", async () => {
    const db = relay.db("pull-conflict");
    const a = await open(db, "a", "node", [V1, V2]);
    await a.exec("INSERT INTO todo(id, title) VALUES ('1', 'a')");
    await a.sync();
    const b = await open(db, "b", "wasm", [V1, ["CREATE TABLE other(id INTEGER PRIMARY KEY)"]], { readOnly: true });
    const before = await dump(b);
    await assert.rejects(b.sync(), isCode("schema_conflict"));
    assert.equal(await dump(b), before);
    assert.equal(b.status().cursor, 0);
    for (const r of opened.splice(0)) await r.close();
  });

  it("an app whose version 1 differs from the one its database has is refused at open", async () => {
    const db = relay.db("open-conflict");
    const path = join(relay.dir, `${db}.db`);
    await (await open(db, "a", "node", [V1], { path })).close();
    await assert.rejects(open(db, "a", "node", [["CREATE TABLE todo(id TEXT PRIMARY KEY)"]], { path }), isCode("schema_conflict"));
    // The same versions, and fewer of them (an older app on a database the log upgraded), are fine.
    await (await open(db, "a", "node", [V1], { path })).close();
    opened.splice(0);
  });

  it("an app older than the log converges on the log's DDL, and its writes are captured under the log's version", async () => {
    const db = relay.db("older-app");
    const n = await open(db, "new", "node", [V1, V2, V3]);
    await n.sync();
    const o = await open(db, "old", "wasm", [V1]);
    await o.sync();
    assert.equal(o.status().schemaVersion, 3);
    await o.exec("INSERT INTO todo(id, name) VALUES ('x', 'old app, new table')");
    await o.sync();
    const log = await logOf(db);
    assert.equal(log.at(-1)!.v, 3);
    await n.sync();
    assert.deepEqual(await n.query("SELECT id, name FROM todo"), [{ id: "x", name: "old app, new table" }]);
    for (const r of opened.splice(0)) await r.close();
  });
});

describe("rolling upgrade: the old app's todo(id, title) next to the new app's todo(id, title, done)", () => {
  it("no replica holds another row's done value: every replica on both drivers equals a fresh replay", async () => {
    const db = relay.db("rolling");
    const oldV = [["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)"]];
    const newV = [...oldV, ["ALTER TABLE todo ADD COLUMN done INTEGER NOT NULL DEFAULT 0"]];
    const oldApp = await open(db, "old", "wasm", oldV);
    await oldApp.exec("INSERT INTO todo(id, title) VALUES ('o0', 'old app first')");
    await oldApp.sync();
    const newApp = await open(db, "new", "wasm", newV);
    await newApp.exec("INSERT INTO todo VALUES ('n1', 'new app', 1)");
    await newApp.sync();
    // With a column list: the old app's table gains `done` when it syncs (see README, Schema changes).
    await oldApp.exec("INSERT INTO todo(id, title) VALUES ('o1', 'old app')");
    await oldApp.sync();
    await newApp.exec("INSERT INTO todo VALUES ('n2', 'new app again', 1)");
    await newApp.sync();
    await oldApp.exec("INSERT INTO todo(id, title) VALUES ('o2', 'old app again')");
    await oldApp.sync();
    for (const driver of ["node", "wasm"] as const) {
      for (const migrations of [oldV, newV]) {
        const fresh = await open(db, `fresh-${driver}-${migrations.length}`, driver, migrations, { readOnly: true });
        await fresh.sync();
        assert.deepEqual(await fresh.query("SELECT id, done FROM todo ORDER BY id"), [
          { id: "n1", done: 1 },
          { id: "n2", done: 1 },
          { id: "o0", done: 0 },
          { id: "o1", done: 0 },
          { id: "o2", done: 0 },
        ], `a fresh ${driver} replica of an app at version ${migrations.length}`);
      }
    }
    for (const r of opened.splice(0)) await r.close();
  });
});


describe("the relay checks every entry against the log's schema; the log is unchanged by a refusal", () => {
  const push = async (db: string, body: unknown) => pushRaw(relay.url, db, await relay.token("write", "w", db), encode(body));
  const ok = captured(V1[0]!, "INSERT INTO todo VALUES ('1', 't', 'n')");

  it("refuses, with a code and nothing stored, each malformed shape and an outdated or unknown version", async () => {
    const db = relay.db("shapes");
    assert.equal((await push(db, { client: "w", schema: [{ version: 1, statements: V1 }], entries: [{ cseq: 1, changeset: ok, v: 1 }] })).status, 200);
    const before = await logOf(db);
    const cases: [string, Uint8Array, number, string][] = [
      ["a table the version lacks", captured("CREATE TABLE nope(id INTEGER PRIMARY KEY)", "INSERT INTO nope VALUES (1)"), 1, "schema_mismatch"],
      ["an extra column", captured("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, note TEXT, extra)", "INSERT INTO todo VALUES ('2', 't', 'n', 1)"), 1, "schema_mismatch"],
      ["a missing column", captured("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)", "INSERT INTO todo VALUES ('2', 't')"), 1, "schema_mismatch"],
      ["another primary key", captured("CREATE TABLE todo(id TEXT, title TEXT PRIMARY KEY, note TEXT)", "INSERT INTO todo VALUES ('2', 't', 'n')"), 1, "schema_mismatch"],
      ["a composite primary key in another order", captured("CREATE TABLE todo(id TEXT, title TEXT, note TEXT, PRIMARY KEY(title, id))", "INSERT INTO todo VALUES ('2', 't', 'n')"), 1, "schema_mismatch"],
      ["a version the log does not have", ok, 2, "schema_mismatch"],
      ["an older version than the log's", ok, 0, "schema_outdated"],
    ];
    for (const [what, changeset, v, code] of cases) {
      const res = await push(db, { client: "w", entries: [{ cseq: 2, changeset, v }] });
      assert.equal(res.body?.error?.code, code, what);
      assert.equal(res.status, code === "schema_outdated" ? 409 : 400, what);
    }
    assert.deepEqual(await logOf(db), before);
  });

  it("refuses migrations that are not schema statements, use reserved names or fail in SQLite, with SQLite's message; nothing is stored", async () => {
    const db = relay.db("ddl");
    assert.equal((await push(db, { client: "w", schema: [{ version: 1, statements: V1 }], entries: [] })).status, 200);
    const before = await logOf(db);
    const bad: [string[], RegExp][] = [
      [["INSERT INTO todo VALUES ('x', 'y', 'z')"], /not a schema statement/],
      [["CREATE TABLE ok(id PRIMARY KEY); DROP TABLE todo"], /one statement per string/],
      [["CREATE TABLE relay_log2(id PRIMARY KEY)"], /reserved/],
      [["CREATE INDEX i ON relay_log(client)"], /reserved/],
      [["CREATE TRIGGER t AFTER INSERT ON relay_log BEGIN SELECT 1; END"], /reserved/],
      [["DROP TABLE relay_log"], /reserved/],
      [["CREATE TEMP TABLE t(id PRIMARY KEY)"], /TEMP/],
      [["CREATE TABLE copy AS SELECT * FROM todo"], /AS SELECT/],
      [["PRAGMA foreign_keys = OFF"], /not a schema statement/],
      [["CREATE TABLE fine(id PRIMARY KEY)", "ALTER TABLE todo ADD COLUMN nonsense NOT NULL"], /NOT NULL/],
      [["CREATE TABLE todo(id PRIMARY KEY)"], /already exists/],
    ];
    for (const [statements, message] of bad) {
      const res = await push(db, { client: "w", schema: [{ version: 2, statements }], entries: [] });
      assert.equal(res.body?.error?.code, "schema_refused", statements.join("; "));
      assert.match(res.body.error.message, message);
    }
    assert.deepEqual(await logOf(db), before);
    // The refused version's DDL was rolled back with it: the same table is free.
    assert.equal((await push(db, { client: "w", schema: [{ version: 2, statements: ["CREATE TABLE fine(id PRIMARY KEY)"] }], entries: [] })).status, 200);
  });

  it("a version that does not follow the log's is bad_request; the same version again is nothing to do", async () => {
    const db = relay.db("gap");
    assert.equal((await push(db, { client: "w", schema: [{ version: 2, statements: V2 }], entries: [] })).body.error.code, "bad_request");
    assert.equal((await push(db, { client: "w", schema: [{ version: 1, statements: V1 }], entries: [] })).status, 200);
    assert.equal((await push(db, { client: "w", schema: [{ version: 1, statements: V1 }], entries: [] })).status, 200);
    assert.deepEqual((await logOf(db)).map((e) => e.seq), [1]);
  });
});

describe("SCHEMA_ROLE=admin", () => {
  const admin = useRelay({ bindings: { SCHEMA_ROLE: "admin" } });
  it("a write token cannot add a version, but may push one the log has; an admin token can", async () => {
    const db = admin.db("admin");
    const body = encode({ client: "w", schema: [{ version: 1, statements: V1 }], entries: [] });
    const w = await pushRaw(admin.url, db, await admin.token("write", "w", db), body);
    assert.equal(w.body?.error?.code, "forbidden");
    assert.equal((await pushRaw(admin.url, db, await admin.token("admin", "ops", db), body)).status, 200);
    assert.equal((await pushRaw(admin.url, db, await admin.token("write", "w", db), body)).status, 200);
  });
});
