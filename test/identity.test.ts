import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { httpTransport, openReplica, RelayError, type Replica, type ReplicaOptions } from "../client/index.ts";
import { RelayError as WireRelayError } from "../protocol/errors.ts";
import * as store from "../worker/log-store.ts";
import { bindClient } from "../worker/identity.ts";
import { encode } from "../protocol/codec.ts";
import { insertChangeset, pullAll, push, pushRaw } from "./support/http.ts";
import { doSql } from "./support/do-sql.ts";
import { TODO_SCHEMA } from "./support/replicas.ts";
import { useRelay } from "./support/fixture.ts";
import { until } from "./support/wait.ts";

/**
 * Replica identity (DESIGN.md "Replica identity and tokens (v2)"): a client
 * id is made with its database, never taken from the token, so reopening,
 * recreating or sharing a token never reuses cseqs the log already holds;
 * and one database file has one opener at a time.
 */
const relay = useRelay();
const opened: Replica[] = [];
after(() => Promise.all(opened.map((r) => r.close())));

async function open(db: string, opts: Partial<ReplicaOptions>): Promise<Replica> {
  const r = await openReplica({ url: relay.url, db, ...(opts.migrations ? {} : { schema: TODO_SCHEMA }), driver: "node", backoff: { baseMs: 5, capMs: 50 }, ...opts });
  opened.push(r);
  return r;
}

async function ids(r: Replica): Promise<string[]> {
  return (await r.query<{ id: string }>("SELECT id FROM todo ORDER BY id")).map((x) => x.id);
}

/** One run of an app: open, write, get it to the relay, close. */
async function run(db: string, token: string, id: string, opts: Partial<ReplicaOptions>): Promise<string> {
  const r = await open(db, { token, ...opts });
  await r.exec("INSERT INTO todo(id, title) VALUES (?, 'x')", [id]);
  if (opts.live) await until(() => r.status().pending === 0, "the live write confirmed");
  else await r.sync();
  const { clientId } = r.status();
  await r.close();
  return clientId;
}

async function fresh(db: string): Promise<string[]> {
  const r = await open(db, { token: await relay.token("read", "checker", db) });
  await r.sync();
  return ids(r);
}

describe("the relay's client → sub bindings (worker/identity.ts over the log's SQL)", () => {
  it("the first sub to push under a client id owns it; the log records each entry's sub; admin acts for any and binds none", () => {
    const sql = doSql();
    store.migrate(sql);
    const entry = (cseq: number) => [{ cseq, changeset: insertChangeset([[cseq, "x"]]) }];
    const push = (client: string, sub: string, role: "write" | "admin", cseq: number) =>
      sql.transactionSync(() => {
        bindClient(sql, client, { sub, role }, 0);
        return store.push(sql, client, entry(cseq), 0, undefined, { sub });
      });
    push("phone", "alice", "write", 1);
    push("laptop", "alice", "write", 1); // one person, two devices
    assert.throws(() => push("phone", "mallory", "write", 2), (e: unknown) => e instanceof WireRelayError && e.code === "forbidden");
    push("phone", "ops", "admin", 2);
    push("tablet", "ops", "admin", 1);
    push("tablet", "bob", "write", 2); // the admin's push did not take the id
    const rows = sql.exec<{ client: string; cseq: number; sub: string }>("SELECT client, cseq, sub FROM relay_log ORDER BY seq").toArray();
    assert.deepEqual(rows.map((r) => `${r.client}/${r.cseq}/${r.sub}`), ["phone/1/alice", "laptop/1/alice", "phone/2/ops", "tablet/1/ops", "tablet/2/bob"]);
    assert.equal(store.head(sql), 5, "the refused push wrote nothing");
  });

  it("a version-1 log gains the sub column and the bindings table", () => {
    const sql = doSql();
    sql.exec("CREATE TABLE relay_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL); INSERT INTO relay_meta VALUES ('schema', 1)");
    sql.exec("CREATE TABLE relay_log(seq INTEGER PRIMARY KEY, client TEXT NOT NULL, cseq INTEGER NOT NULL, ts INTEGER NOT NULL, size INTEGER NOT NULL, chunks INTEGER NOT NULL, body BLOB, UNIQUE(client, cseq))");
    store.migrate(sql);
    store.push(sql, "c", [{ cseq: 1, changeset: insertChangeset([[1, "x"]]) }], 0, undefined, { sub: "alice" });
    bindClient(sql, "c", { sub: "alice", role: "write" }, 0);
    assert.equal(sql.exec<{ sub: string }>("SELECT sub FROM relay_log").one().sub, "alice");
  });

  it("every older layout of the relay's tables is upgraded to the one a new object gets", () => {
    const LOG_V1 = "CREATE TABLE relay_log(seq INTEGER PRIMARY KEY, client TEXT NOT NULL, cseq INTEGER NOT NULL, ts INTEGER NOT NULL, size INTEGER NOT NULL, chunks INTEGER NOT NULL, body BLOB, UNIQUE(client, cseq));" +
      "CREATE TABLE relay_chunk(seq INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(seq, idx)) WITHOUT ROWID;";
    const SCHEMA_TABLES = "CREATE TABLE relay_schema(version INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, client TEXT NOT NULL, ts INTEGER NOT NULL, statements TEXT NOT NULL);" +
      "CREATE TABLE relay_shape(version INTEGER NOT NULL, tbl TEXT NOT NULL, shape TEXT NOT NULL, PRIMARY KEY(version, tbl)) WITHOUT ROWID;";
    const layouts: Record<string, string> = {
      "version 1": `${LOG_V1} INSERT INTO relay_meta VALUES ('schema', 1)`,
      "version 2 (identity)": `${LOG_V1} ALTER TABLE relay_log ADD COLUMN sub TEXT; CREATE TABLE relay_client(client TEXT PRIMARY KEY, sub TEXT NOT NULL, since INTEGER NOT NULL) WITHOUT ROWID; INSERT INTO relay_meta VALUES ('schema', 2)`,
      "version 3 (identity with the schema log)": `${LOG_V1} ALTER TABLE relay_log ADD COLUMN sub TEXT; CREATE TABLE relay_client(client TEXT PRIMARY KEY, sub TEXT NOT NULL, since INTEGER NOT NULL) WITHOUT ROWID;
        ALTER TABLE relay_log ADD COLUMN v INTEGER NOT NULL DEFAULT 0;
        ${SCHEMA_TABLES.replace("statements TEXT NOT NULL)", "statements TEXT NOT NULL, sub TEXT)")}
        INSERT INTO relay_meta VALUES ('schema', 3)`,
    };
    // Columns by name (an upgraded table may hold them in another order) and the meta rows.
    const layout = (sql: ReturnType<typeof doSql>) => ({
      columns: sql.exec<{ c: string }>(`SELECT m.name || '.' || c.name || ' ' || c.type || ' ' || c."notnull" AS c FROM sqlite_schema m, pragma_table_xinfo(m.name) c
        WHERE m.type = 'table' AND m.name GLOB 'relay_*' ORDER BY 1`).toArray().map((r) => r.c),
      meta: sql.exec<{ key: string; value: number }>("SELECT key, value FROM relay_meta ORDER BY key").toArray().map((r) => `${r.key}=${r.value}`),
    });
    const created = doSql();
    store.migrate(created);
    const expected = layout(created);
    assert.ok(expected.columns.includes("relay_schema.sub TEXT 0") && expected.columns.includes("relay_log.v INTEGER 1"));
    for (const [name, ddl] of Object.entries(layouts)) {
      const sql = doSql();
      sql.exec(`CREATE TABLE relay_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL); ${ddl}`);
      store.migrate(sql);
      assert.deepEqual(layout(sql), expected, name);
      store.migrate(sql); // once there, nothing more to do
      store.push(sql, "c", [{ cseq: 1, changeset: insertChangeset([[1, "x"]]), v: 1 }], 0, undefined, { sub: "alice", schema: [{ version: 1, statements: ["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"] }] });
      assert.deepEqual(sql.exec<{ s: string }>("SELECT sub AS s FROM relay_schema UNION ALL SELECT sub FROM relay_log").toArray().map((r) => r.s), ["alice", "alice"], name);
    }
  });
});

describe("admission under another's client id", () => {
  it("pushes refused as another sub's never use up the owner's share: they pay from a bucket of their own", async () => {
    const db = relay.db("admission-pair");
    const alice = await relay.token("write", "alice", db);
    const one = insertChangeset([[1, "x"]]);
    assert.equal((await push(relay.url, db, alice, "phone", [{ cseq: 1, changeset: one }])).status, 200);
    // Mallory floods under alice's client id: forbidden while admitted, then overloaded.
    const mallory = await relay.token("write", "mallory", db);
    const flood = encode({ client: "phone", entries: Array.from({ length: 1000 }, (_, i) => ({ cseq: i + 2, changeset: one })) });
    const codes = new Set<string>();
    for (let i = 0; i < 200 && !codes.has("overloaded"); i++) codes.add((await pushRaw(relay.url, db, mallory, flood)).body.error.code);
    assert.deepEqual([...codes].sort(), ["forbidden", "overloaded"]);
    const res = await push(relay.url, db, alice, "phone", [{ cseq: 2, changeset: one }]);
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });
});

describe("schema versions under a client id (schema entries, cseq 0)", () => {
  const V1 = { version: 1, statements: ["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"] };
  const V2 = { version: 2, statements: ["ALTER TABLE t ADD COLUMN w"] };

  it("record the sub of the token that pushed them", () => {
    const sql = doSql();
    store.migrate(sql);
    const res = store.push(sql, "phone", [], 7, undefined, { sub: "alice", schema: [V1] });
    assert.deepEqual(res.schema, [{ version: 1, seq: 1 }]);
    assert.deepEqual(sql.exec("SELECT version, seq, client, sub FROM relay_schema").toArray().map((r) => ({ ...r })), [{ version: 1, seq: 1, client: "phone", sub: "alice" }]);
  });

  it("are bound like writes: a schema-only push binds the client id, and another sub cannot push a version under it", async () => {
    const db = relay.db("schema-binding");
    const schemaOnly = (version: typeof V1) => encode({ client: "phone", schema: [version], entries: [] });
    assert.equal((await pushRaw(relay.url, db, await relay.token("write", "alice", db), schemaOnly(V1))).status, 200);
    const mallory = await relay.token("write", "mallory", db);
    const refused = await pushRaw(relay.url, db, mallory, schemaOnly(V2));
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, "forbidden");
    const write = await push(relay.url, db, mallory, "phone", [{ cseq: 1, changeset: insertChangeset([[1, "x"]]), v: 1 }]);
    assert.equal(write.body.error.code, "forbidden", "the schema-only push bound the id to alice");
    const log = await pullAll(relay.url, db, await relay.token("read", "checker", db));
    assert.deepEqual(log.map((e: any) => [e.client, e.cseq, e.v]), [["phone", 0, 1]], "the refused version left the log unchanged");
    // Admin acts for any client, schema included (and binds none).
    assert.equal((await pushRaw(relay.url, db, await relay.token("admin", "ops", db), schemaOnly(V2))).status, 200);
  });
});

describe("client identity", () => {
  for (const live of [false, true]) {
    it(`a :memory: replica opened twice with the same token, writing first${live ? ", live" : ""}: every write reaches a fresh replica`, async () => {
      const db = relay.db("memory-twice");
      const token = await relay.token("write", "alice", db);
      const first = await run(db, token, "1", { path: ":memory:", live });
      const second = await run(db, token, "2", { path: ":memory:", live });
      assert.deepEqual(await fresh(db), ["1", "2"]);
      assert.notEqual(first, second, "each :memory: open is a new replica");
      assert.match(first, /^[A-Za-z0-9_-]{22}$/, "128 random bits, base64url");
    });
  }

  it("a file replica deleted and recreated gets a new id: every write reaches a fresh replica", async () => {
    const db = relay.db("recreated");
    const token = await relay.token("write", "alice", db);
    const path = join(relay.dir, "recreated.db");
    const first = await run(db, token, "1", { path });
    // The same file reopened keeps its id.
    assert.equal(await run(db, token, "2", { path }), first);
    for (const f of [path, `${path}-wal`, `${path}-shm`]) rmSync(f, { force: true });
    const second = await run(db, token, "3", { path });
    assert.notEqual(second, first);
    assert.deepEqual(await fresh(db), ["1", "2", "3"]);
  });

  it("the clientId option stays: it is used when the database is created and must match afterwards", async () => {
    const db = relay.db("given-id");
    const path = join(relay.dir, "given-id.db");
    const token = await relay.token("write", "alice", db);
    assert.equal(await run(db, token, "1", { path, clientId: "my-device" }), "my-device");
    await assert.rejects(open(db, { token, path, clientId: "another" }), (e: unknown) => e instanceof RelayError && e.code === "bad_request");
  });
});

describe("one opener per database file", () => {
  it("in one process: the second openReplica is refused with database_locked until the first closes", async () => {
    const db = relay.db("two-openers");
    const path = join(relay.dir, "two-openers.db");
    const token = await relay.token("write", "alice", db);
    const A = await open(db, { token, path });
    await assert.rejects(open(db, { token, path }), (e: unknown) => e instanceof RelayError && e.code === "database_locked" && e.message.includes(path));
    // Readers of the file are not shut out (a backup, the sqlite3 shell).
    const { DatabaseSync } = await import("node:sqlite");
    const reader = new DatabaseSync(path, { readOnly: true });
    assert.equal((reader.prepare("SELECT count(*) AS n FROM todo").get() as { n: number }).n, 0);
    reader.close();
    await A.exec("INSERT INTO todo(id) VALUES ('a')");
    await A.close();
    const B = await open(db, { token, path });
    await B.exec("INSERT INTO todo(id) VALUES ('b')");
    await B.sync();
    assert.deepEqual(await fresh(db), ["a", "b"]);
  });

  it("in two processes: refused while the other process has it open; free once that process is killed", async () => {
    const db = relay.db("two-processes");
    const path = join(relay.dir, "two-processes.db");
    const token = await relay.token("write", "alice", db);
    const child = spawn(process.execPath, [new URL("./support/crash-writer.ts", import.meta.url).pathname, relay.url, db, token, path], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    try {
      await until(() => out.includes("committed"), "the other process committed a write", 30_000);
      await assert.rejects(open(db, { token, path }), (e: unknown) => e instanceof RelayError && e.code === "database_locked");
    } finally {
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
    }
    // The operating system dropped the dead process's lock: no stale lock file.
    const A = await open(db, { token, path });
    await A.sync();
    assert.deepEqual(await fresh(db), ["crash"]);
    await A.close();
  });
});

describe("no write dropped or stranded", () => {
  it("a push refused for good (403 after a token change) is held and reported, and pulls go on", async () => {
    const db = relay.db("refused");
    const path = join(relay.dir, "refused.db");
    const alice = await relay.token("write", "alice", db);
    const A = await open(db, { token: alice, path });
    await A.exec("INSERT INTO todo(id) VALUES ('a1')");
    await A.sync(); // the database's client id is now bound to alice
    await A.close();
    // Another person's token on the same database file: the client id is alice's.
    const A2 = await open(db, { token: await relay.token("write", "bob", db), path });
    const errors: RelayError[] = [];
    A2.on("error", (e) => errors.push(e));
    await A2.exec("INSERT INTO todo(id) VALUES ('a2')");
    const B = await open(db, { token: await relay.token("write", "carol", db) });
    await B.exec("INSERT INTO todo(id) VALUES ('b1')");
    await B.sync();
    await assert.rejects(A2.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden");
    assert.deepEqual(await ids(A2), ["a1", "a2", "b1"], "B's write was pulled although A's push was refused");
    assert.equal(A2.status().blocked?.cseq, 2);
    assert.equal(A2.status().blocked?.code, "forbidden");
    assert.equal(A2.status().pending, 1, "the refused write is held, not dropped");
    assert.match(errors[0]!.message, /local write 2/);

    // Live: others' writes still arrive while the push is held.
    A2.setLive(true);
    await B.exec("INSERT INTO todo(id) VALUES ('b2')");
    await B.sync();
    await until(async () => (await ids(A2)).includes("b2"), "B's next write reached the blocked live replica");
    assert.equal(A2.status().live, true);
    assert.equal(A2.status().pending, 1);
    await A2.close();

    // Alice again: the held write goes out.
    const A3 = await open(db, { token: alice, path });
    await A3.sync();
    assert.equal(A3.status().blocked, null);
    assert.deepEqual(await fresh(db), ["a1", "a2", "b1", "b2"]);
  });

  it("a held write is translated when the log moves to a new schema version meanwhile, and goes out under it", async () => {
    const db = relay.db("held-migrated");
    const path = join(relay.dir, "held-migrated.db");
    const V1 = ["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)"];
    const V2 = ["ALTER TABLE todo ADD COLUMN done INTEGER NOT NULL DEFAULT 0"];
    const alice = await relay.token("write", "alice", db);
    const A = await open(db, { token: alice, path, migrations: [V1] });
    await A.exec("INSERT INTO todo VALUES ('a1', 'bound')");
    await A.sync();
    await A.close();
    const A2 = await open(db, { token: await relay.token("write", "bob", db), path, migrations: [V1] });
    await A2.exec("INSERT INTO todo VALUES ('a2', 'held')");
    await assert.rejects(A2.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden");
    // Another app moves the log to version 2 while A2's write is held.
    const B = await open(db, { token: await relay.token("write", "carol", db), migrations: [V1, V2] });
    await B.exec("INSERT INTO todo VALUES ('b1', 'new app', 1)");
    await B.sync();
    await assert.rejects(A2.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden", "still refused: held, not outdated");
    assert.equal(A2.status().schemaVersion, 2, "the pull ran the log's version");
    assert.equal(A2.status().pending, 1);
    await A2.close();
    // Its owner's token: the held write goes out, captured under version 2 now.
    const A3 = await open(db, { token: alice, path, migrations: [V1] });
    await A3.sync();
    assert.equal(A3.status().blocked, null);
    const log = await pullAll(relay.url, db, await relay.token("read", "checker", db));
    const who = (e: any) => (e.client === A3.clientId ? "A" : e.client === B.clientId ? "B" : e.client);
    assert.deepEqual(log.map((e: any) => [who(e), e.cseq, e.v]), [["A", 0, 1], ["A", 1, 1], ["B", 0, 2], ["B", 1, 2], ["A", 2, 2]]);
    const fresh2 = await open(db, { token: await relay.token("read", "checker", db), migrations: [] });
    await fresh2.sync();
    assert.deepEqual(await fresh2.query("SELECT id, title, done FROM todo ORDER BY id"), [
      { id: "a1", title: "bound", done: 0 },
      { id: "a2", title: "held", done: 0 },
      { id: "b1", title: "new app", done: 1 },
    ]);
  });
});

describe("schema versions the relay refuses (SCHEMA_ROLE=admin)", () => {
  const strict = useRelay({ bindings: { SCHEMA_ROLE: "admin" } });
  it("a refused push of versions alone holds nothing: it is reported, pulls go on, the next sync tries again", async () => {
    const db = strict.db("schema-only");
    const V1 = ["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)"];
    const ops = await openReplica({ url: strict.url, db, token: await strict.token("admin", "ops", db), migrations: [V1], driver: "node" });
    opened.push(ops);
    await ops.exec("INSERT INTO todo VALUES ('1', 'from ops')");
    await ops.sync();
    const W = await openReplica({ url: strict.url, db, token: await strict.token("write", "w", db), migrations: [V1, ["ALTER TABLE todo ADD COLUMN done INTEGER"]], driver: "node" });
    opened.push(W);
    const errors: RelayError[] = [];
    W.on("error", (e) => errors.push(e));
    await assert.rejects(W.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden");
    assert.deepEqual(await W.query("SELECT id, title FROM todo"), [{ id: "1", title: "from ops" }], "pulled although its version was refused");
    assert.equal(W.status().blocked, null, "no write waits on it");
    assert.deepEqual(errors.map((e) => e.code), ["forbidden"]);
    await assert.rejects(W.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden");
  });
});

describe("a write larger than the relay accepts", () => {
  const small = useRelay({ bindings: { MAX_BODY_BYTES: String(256 * 1024) } });

  it("is refused at commit with write_too_large while other writes keep syncing both ways", async () => {
    const db = small.db("oversized");
    const mk = async (sub: string) => {
      const r = await openReplica({ url: small.url, db, token: await small.token("write", sub, db), schema: ["CREATE TABLE IF NOT EXISTS f(id TEXT PRIMARY KEY, data BLOB)"], driver: "node" });
      opened.push(r);
      return r;
    };
    const A = await mk("a"), B = await mk("b");
    await A.sync(); // learns the relay's limit
    const big = new Uint8Array(300 * 1024).fill(7);
    await assert.rejects(A.exec("INSERT INTO f VALUES ('big', ?)", [big]), (e: unknown) => e instanceof RelayError && e.code === "write_too_large");
    assert.deepEqual(await A.query("SELECT id FROM f"), [], "nothing of it committed");
    assert.equal(A.status().pending, 0);
    await A.exec("INSERT INTO f VALUES ('a', x'01')");
    await B.exec("INSERT INTO f VALUES ('b', x'02')");
    await A.sync();
    await B.sync();
    await A.sync();
    for (const r of [A, B]) assert.deepEqual((await r.query<{ id: string }>("SELECT id FROM f ORDER BY id")).map((x) => x.id), ["a", "b"]);
    const within = new Uint8Array(200 * 1024).fill(8);
    await A.exec("INSERT INTO f VALUES ('ok', ?)", [within]);
    await A.sync();
    assert.equal(A.status().pending, 0);
  });

  it("written before the client knew the limit: held and reported, pulls go on; discardBlocked() alone drops it", async () => {
    const db = small.db("unknown-limit");
    const schema = ["CREATE TABLE IF NOT EXISTS f(id TEXT PRIMARY KEY, data BLOB)"];
    const real = httpTransport({ url: small.url, db, token: await small.token("write", "a", db) });
    // A transport without health(): this replica never learns the limit (an old relay, say).
    const A = await openReplica({ url: small.url, db, schema, driver: "node", transport: { push: real.push, pull: real.pull } });
    const B = await openReplica({ url: small.url, db, token: await small.token("write", "b", db), schema, driver: "node" });
    opened.push(A, B);
    await A.exec("INSERT INTO f VALUES ('big', ?)", [new Uint8Array(300 * 1024).fill(7)]);
    await A.exec("INSERT INTO f VALUES ('small', x'01')");
    await B.exec("INSERT INTO f VALUES ('b', x'02')");
    await B.sync();
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "payload_too_large");
    const rows = async (r: Replica) => (await r.query<{ id: string }>("SELECT id FROM f ORDER BY id")).map((x) => x.id);
    assert.deepEqual(await rows(A), ["b", "big", "small"], "B's write pulled; A's own kept");
    assert.equal(A.status().blocked?.cseq, 1);
    // Background syncs and later syncs never drop it.
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "payload_too_large");
    assert.equal(A.status().pending, 2);
    assert.equal(await A.discardBlocked(), 1);
    assert.deepEqual(await rows(A), ["b", "small"], "undone locally; the write after it kept");
    await A.sync();
    await B.sync();
    assert.deepEqual(await rows(B), ["b", "small"]);
    assert.equal(A.status().pending, 0);
    assert.equal(await A.discardBlocked(), null);
  });

  it("discardBlocked() re-applies the writes after it translated to the local schema version", async () => {
    const db = small.db("discard-migrated");
    const path = join(small.dir, "discard-migrated.db");
    const V1 = ["CREATE TABLE f(id TEXT PRIMARY KEY, data BLOB, tag TEXT)"];
    // A changeset of version 1 has a column more than version 2's table: SQLite would skip it untranslated.
    const V2 = ["ALTER TABLE f DROP COLUMN tag"];
    const real = httpTransport({ url: small.url, db, token: await small.token("write", "a", db) });
    const transport = { push: real.push, pull: real.pull }; // never learns the limit
    const B = await openReplica({ url: small.url, db, token: await small.token("write", "b", db), migrations: [V1], driver: "node" });
    opened.push(B);
    await B.exec("INSERT INTO f VALUES ('b', x'02', 'x')");
    await B.sync();
    let A = await openReplica({ url: small.url, db, migrations: [V1], driver: "node", path, transport });
    await A.exec("INSERT INTO f VALUES ('big', ?, 'x')", [new Uint8Array(300 * 1024).fill(7)]);
    await A.exec("INSERT INTO f VALUES ('small', x'01', 'x')");
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "payload_too_large");
    await A.close();
    // The app upgrades to version 2 offline: both writes stay as sent, under version 1.
    A = await openReplica({ url: small.url, db, migrations: [V1, V2], driver: "node", path, transport });
    opened.push(A);
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "payload_too_large");
    assert.equal(A.status().blocked?.cseq, 1);
    assert.equal(await A.discardBlocked(), 1);
    assert.deepEqual(await A.query("SELECT * FROM f ORDER BY id"), [{ id: "b", data: new Uint8Array([2]) }, { id: "small", data: new Uint8Array([1]) }], "the later write kept, in version 2's shape");
    await A.sync();
    await B.sync();
    assert.deepEqual(await B.query("SELECT * FROM f ORDER BY id"), [{ id: "b", data: new Uint8Array([2]) }, { id: "small", data: new Uint8Array([1]) }]);
    assert.equal(B.status().schemaVersion, 2);
    assert.equal(A.status().pending, 0);
  });
});

