import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { httpTransport, openReplica, RelayError, type Replica, type ReplicaOptions } from "../client/index.ts";
import { RelayError as WireRelayError } from "../protocol/errors.ts";
import * as store from "../worker/log-store.ts";
import { bindClient } from "../worker/identity.ts";
import { insertChangeset } from "./support/http.ts";
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
  const r = await openReplica({ url: relay.url, db, schema: TODO_SCHEMA, driver: "node", backoff: { baseMs: 5, capMs: 50 }, ...opts });
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
        return store.push(sql, client, entry(cseq), 0, undefined, sub);
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
    store.push(sql, "c", [{ cseq: 1, changeset: insertChangeset([[1, "x"]]) }], 0, undefined, "alice");
    bindClient(sql, "c", { sub: "alice", role: "write" }, 0);
    assert.equal(sql.exec<{ sub: string }>("SELECT sub FROM relay_log").one().sub, "alice");
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
});

