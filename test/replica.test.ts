import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { openReplica, RelayError, type Replica } from "../client/index.ts";
import { httpTransport, type Transport } from "../client/transport/http.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { dump, replica, TODO_SCHEMA } from "./support/replicas.ts";
import { pullAll } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";

const relay = useRelay();


async function closeAll(...rs: Replica[]) {
  await Promise.all(rs.map((r) => r.close()));
}

for (const [a, b] of [["node", "node"], ["wasm", "wasm"], ["node", "wasm"]] as [DriverKind, DriverKind][]) {
  describe(`replicas ${a} + ${b}`, () => {
    it("a write on A reaches B through sync", async () => {
      const db = relay.db("basic");
      const A = await replica(relay, db, "a", a), B = await replica(relay, db, "b", b);
      await A.exec("INSERT INTO todo(id, title) VALUES (?, ?)", ["1", "milk"]);
      assert.equal(A.status().pending, 1);
      await A.sync();
      assert.equal(A.status().pending, 0);
      await B.sync();
      assert.deepEqual(await B.query("SELECT id, title, done FROM todo"), [{ id: "1", title: "milk", done: 0 }]);
      assert.equal(B.status().cursor, 2, "seq 1 is the schema (version 1), seq 2 the write");
      assert.equal(await dump(A), await dump(B));
      await closeAll(A, B);
    });

    it("concurrent updates to different columns of one row both survive", async () => {
      const db = relay.db("columns");
      const A = await replica(relay, db, "a", a), B = await replica(relay, db, "b", b);
      await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'milk')");
      await A.sync();
      await B.sync();
      await A.exec("UPDATE todo SET title = 'oat milk' WHERE id = '1'");
      await B.exec("UPDATE todo SET done = 1 WHERE id = '1'");
      await A.sync();
      await B.sync();
      await A.sync();
      for (const r of [A, B]) assert.deepEqual(await r.query("SELECT title, done FROM todo"), [{ title: "oat milk", done: 1 }]);
      assert.equal((await A.conflicts()).length + (await B.conflicts()).length, 0);
      await closeAll(A, B);
    });

    it("concurrent updates to the same column: the later log entry wins everywhere, and the conflict is recorded", async () => {
      const db = relay.db("samecol");
      const A = await replica(relay, db, "a", a), B = await replica(relay, db, "b", b);
      await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'milk')");
      await A.sync();
      await B.sync();
      await A.exec("UPDATE todo SET title = 'from A' WHERE id = '1'");
      await B.exec("UPDATE todo SET title = 'from B' WHERE id = '1'");
      const seen: string[] = [];
      B.on("conflict", (c) => seen.push(`${c.kind}:${c.table}:${c.resolution}`));
      await A.sync(); // A's update is seq 3 (seq 1 is the schema)
      await B.sync(); // B's is seq 4: later in the log
      await A.sync();
      for (const r of [A, B]) assert.deepEqual(await r.query("SELECT title FROM todo"), [{ title: "from B" }]);
      // Every replica applies seq 4 on top of seq 3 and meets the same DATA conflict.
      assert.deepEqual(seen, ["data:todo:replace"]);
      assert.deepEqual(await B.conflicts(), await A.conflicts());
      const conflicts = await A.conflicts();
      assert.equal(conflicts.length, 1);
      assert.equal(conflicts[0]!.kind, "data");
      assert.equal(conflicts[0]!.seq, 4);
      assert.deepEqual(conflicts[0]!.pk, ["1"]);
      assert.deepEqual(conflicts[0]!.local?.title, "from A");
      assert.deepEqual(conflicts[0]!.incoming.new, { title: "from B" });
      assert.equal(conflicts[0]!.resolution, "replace");
      await closeAll(A, B);
    });
  });
}

describe("conflict policies", () => {
  it("first-write-wins keeps the earlier entry's value on every replica", async () => {
    const db = relay.db("fww");
    const opts = { conflicts: { tables: { todo: "first-write-wins" as const } } };
    const A = await replica(relay, db, "a", "node", opts), B = await replica(relay, db, "b", "wasm", opts);
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'A first')");
    await B.exec("INSERT INTO todo(id, title) VALUES ('1', 'B second')");
    await A.sync();
    await B.sync();
    await A.sync();
    for (const r of [A, B]) assert.deepEqual(await r.query("SELECT title FROM todo"), [{ title: "A first" }]);
    const [c] = await B.conflicts();
    assert.equal(c?.kind, "conflict");
    assert.equal(c?.resolution, "omit");
    assert.equal(c?.seq, 3); // seq 1 is the schema
    await closeAll(A, B);
  });

  it("a custom onConflict decides, and sees table, key and both values", async () => {
    const db = relay.db("custom");
    const infos: string[] = [];
    // Deterministic: keep the longer title.
    const onConflict = (i: any) => {
      infos.push(`${i.table}/${i.pk[0]}/${i.local?.title}/${i.incoming.new?.title}`);
      return (i.incoming.new?.title ?? "").length >= (i.local?.title ?? "").length ? ("replace" as const) : ("omit" as const);
    };
    const A = await replica(relay, db, "a", "node", { conflicts: { onConflict } });
    const B = await replica(relay, db, "b", "node", { conflicts: { onConflict } });
    await A.exec("INSERT INTO todo(id, title) VALUES ('k', 'a much longer title')");
    await B.exec("INSERT INTO todo(id, title) VALUES ('k', 'short')");
    await A.sync();
    await B.sync();
    await A.sync();
    for (const r of [A, B]) assert.deepEqual(await r.query("SELECT title FROM todo"), [{ title: "a much longer title" }]);
    assert.ok(infos.includes("todo/k/a much longer title/short"), infos.join(","));
    await closeAll(A, B);
  });

  it("UPDATE of a row deleted concurrently is omitted (notfound) everywhere", async () => {
    const db = relay.db("notfound");
    const A = await replica(relay, db, "a", "node"), B = await replica(relay, db, "b", "wasm");
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'x')");
    await A.sync();
    await B.sync();
    await A.exec("DELETE FROM todo WHERE id = '1'");
    await B.exec("UPDATE todo SET done = 1 WHERE id = '1'");
    await A.sync();
    await B.sync();
    await A.sync();
    for (const r of [A, B]) assert.deepEqual(await r.query("SELECT * FROM todo"), []);
    const kinds = [...(await A.conflicts()), ...(await B.conflicts())].map((c) => c.kind);
    assert.ok(kinds.includes("notfound"), kinds.join());
    await closeAll(A, B);
  });

  it("a UNIQUE violation is omitted and recorded as a constraint conflict with the row", async () => {
    const db = relay.db("unique");
    const schema = ["CREATE TABLE IF NOT EXISTS u(id INTEGER PRIMARY KEY, email TEXT UNIQUE)"];
    const A = await replica(relay, db, "a", "node", { schema }), B = await replica(relay, db, "b", "wasm", { schema });
    await A.exec("INSERT INTO u VALUES (1, 'x@example.com')");
    await B.exec("INSERT INTO u VALUES (2, 'x@example.com')");
    await A.sync();
    await B.sync();
    await A.sync();
    for (const r of [A, B]) assert.deepEqual(await r.query("SELECT * FROM u"), [{ id: 1, email: "x@example.com" }]);
    const c = (await A.conflicts()).find((x) => x.kind === "constraint");
    assert.ok(c, "A recorded the constraint conflict");
    assert.equal(c.table, "u");
    assert.deepEqual(c.pk, [2]);
    assert.equal(B.status().pending, 0);
    await closeAll(A, B);
  });
});

describe("convergence", () => {
  for (const start of [42, 7, 2026]) it(`5 replicas on both drivers, random writes on overlapping keys, some offline: all equal, and equal to a fresh replay (seed ${start})`, async () => {
    const db = relay.db("converge");
    const kinds: DriverKind[] = ["node", "wasm", "node", "wasm", "node"];
    const rs = await Promise.all(kinds.map((k, i) => replica(relay, db, `r${i}`, k)));
    let seed = start;
    const rand = (n: number) => {
      seed = Math.imul(seed ^ (seed >>> 15), 2246822519) + 374761393;
      return (seed >>> 0) % n;
    };
    for (let round = 0; round < 12; round++) {
      for (const [i, r] of rs.entries()) {
        const ops = 1 + rand(3);
        await r.transaction(async (tx) => {
          for (let k = 0; k < ops; k++) {
            const id = String(rand(8));
            const pick = rand(6);
            if (pick === 0) await tx.exec("DELETE FROM todo WHERE id = ?", [id]);
            else if (pick <= 2) await tx.exec("INSERT OR REPLACE INTO todo(id, title, done) VALUES (?, ?, ?)", [id, `t${round}-${i}`, rand(2)]);
            else if (pick === 3) await tx.exec("UPDATE todo SET done = ? WHERE id = ?", [rand(2), id]);
            else await tx.exec("UPDATE todo SET note = ? WHERE id = ?", [`n${round}-${i}`, id]);
          }
        });
        // Replica 4 stays offline for the first 8 rounds.
        if (!(i === 4 && round < 8) && rand(3) > 0) await r.sync();
      }
    }
    for (let pass = 0; pass < 2; pass++) for (const r of rs) await r.sync();
    const dumps = await Promise.all(rs.map(dump));
    for (const d of dumps) assert.equal(d, dumps[0]);
    const fresh = await openReplica({ url: relay.url, db, token: await relay.token("read", "fresh", db), schema: TODO_SCHEMA, driver: "wasm" });
    await fresh.sync();
    assert.equal(await dump(fresh), dumps[0]);
    assert.ok(JSON.parse(dumps[0]!).todo.length > 0);
    for (const r of rs) assert.equal(r.status().pending, 0);
    const log = await pullAll(relay.url, db, await relay.token("read", "x", db));
    const keys = log.map((e: any) => `${e.client}/${e.cseq}`);
    assert.equal(new Set(keys).size, keys.length, "no duplicate (client, cseq) in the log");
    await closeAll(...rs, fresh);
  });
});

describe("atomicity and durability", () => {
  it("a 1,000-row transaction is never seen half applied on another replica", async () => {
    const db = relay.db("atomic");
    const A = await replica(relay, db, "a", "node");
    const path = join(relay.dir, "atomic-b.db");
    const B = await replica(relay, db, "b", "node", { path });
    await A.transaction(async (tx) => {
      for (let i = 0; i < 1000; i++) await tx.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`k${i}`, `t${i}`]);
    });
    await A.sync();
    // A second connection polls B's file while B applies: it must only ever see 0 or 1,000 rows.
    const watcher = new DatabaseSync(path, { readOnly: true });
    const seen = new Set<number>();
    let syncing = true;
    const poll = (async () => {
      while (syncing) {
        seen.add((watcher.prepare("SELECT count(*) AS n FROM todo").get() as { n: number }).n);
        await new Promise((r) => setImmediate(r));
      }
    })();
    await B.sync();
    syncing = false;
    await poll;
    seen.add((watcher.prepare("SELECT count(*) AS n FROM todo").get() as { n: number }).n);
    watcher.close();
    assert.deepEqual([...seen].filter((n) => n !== 0 && n !== 1000), []);
    assert.ok(seen.has(1000));
    await closeAll(A, B);
  });

  it("a lost push response is retried without a duplicate entry", async () => {
    const db = relay.db("lost");
    const real = httpTransport({ url: relay.url, db, token: await relay.token("write", "a", db) });
    let drops = 1;
    const lossy: Transport = {
      pull: real.pull,
      async push(client, entries, signal, schema) {
        const res = await real.push(client, entries, signal, schema);
        if (drops-- > 0) throw new RelayError("network", "response lost (injected)");
        return res;
      },
    };
    const A = await replica(relay, db, "a", "node", { transport: lossy });
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'once')");
    await A.sync();
    assert.equal(drops, -1, "the fault was injected");
    const log = await pullAll(relay.url, db, await relay.token("read", "x", db));
    assert.deepEqual(log.map((e) => e.cseq), [0, 1], "the schema entry, then the write once");
    assert.equal(A.status().pending, 0);
    assert.deepEqual(await A.query("SELECT title FROM todo"), [{ title: "once" }]);
    await A.close();
  });

  it("a failing relay leaves the write pending, and a later sync delivers it once", async () => {
    const db = relay.db("offline");
    const A = await replica(relay, db, "a", "node", { url: "http://127.0.0.1:9", backoff: { baseMs: 1, capMs: 2, maxAttempts: 2 } });
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'later')");
    const errors: string[] = [];
    A.on("error", (e) => errors.push(e.code));
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "network");
    assert.deepEqual(errors, ["network"]);
    assert.equal(A.status().pending, 1);
    await A.close();
  });
});

describe("a relay that never answers", () => {
  async function silentServer() {
    const { createServer } = await import("node:net");
    const sockets: import("node:net").Socket[] = [];
    const srv = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const { port } = srv.address() as { port: number };
    return { url: `http://127.0.0.1:${port}`, close: () => (sockets.forEach((s) => s.destroy()), new Promise((r) => srv.close(r))) };
  }

  it("times a request out as a retryable network error", async () => {
    const silent = await silentServer();
    const A = await replica(relay, relay.db("silent"), "a", "node", { url: silent.url, requestTimeoutMs: 100, backoff: { baseMs: 1, capMs: 2, maxAttempts: 2 } });
    await A.exec("INSERT INTO todo(id) VALUES ('1')");
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "network" && /did not answer/.test(e.message));
    assert.equal(A.status().pending, 1);
    await A.close();
    await silent.close();
  });

  it("close() ends a sync in flight instead of waiting for it", async () => {
    const silent = await silentServer();
    const A = await replica(relay, relay.db("silent"), "a", "node", { url: silent.url });
    await A.exec("INSERT INTO todo(id) VALUES ('1')");
    const syncing = A.sync();
    const outcome = syncing.then(() => "resolved", (e) => (e instanceof RelayError ? e.code : String(e)));
    await new Promise((r) => setTimeout(r, 50));
    await A.close(); // with the default 30 s timeout, waiting it out would fail this test
    assert.equal(await outcome, "aborted");
    await silent.close();
  });
});

describe("the relay's limits, asked at open", () => {
  /** A fetch that holds /v1/health until `answer()` and logs the requests in order. */
  function holdingHealth() {
    const log: string[] = [];
    let answer!: () => void;
    const answered = new Promise<void>((r) => (answer = r));
    let pulled!: () => void;
    const pulling = new Promise<void>((r) => (pulled = r));
    const fetch: typeof globalThis.fetch = async (input, init) => {
      const path = new URL(input instanceof Request ? input.url : String(input)).pathname.replace(/^.*\//, "");
      log.push(path);
      if (path === "pull") pulled();
      if (path === "health") {
        const aborted = new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(init.signal!.reason), { once: true }));
        await Promise.race([answered, aborted]).catch((e: unknown) => {
          log.push("health aborted");
          throw e;
        });
        log.push("health answered");
      }
      return globalThis.fetch(input, init);
    };
    return { log, fetch, answer, pulling };
  }

  it("are asked when the replica opens; a sync with nothing to push pulls without waiting for them", { timeout: 20_000 }, async () => {
    const db = relay.db("limits-at-open");
    const h = holdingHealth();
    const B = await replica(relay, db, "b", "node", { fetch: h.fetch });
    assert.deepEqual(h.log, ["health"], "asked at open, before any sync");
    const synced = B.sync();
    await h.pulling; // before: the sync waited for the held answer and never pulled
    h.answer();
    await synced;
    assert.equal(h.log.filter((x) => x === "health").length, 1, "one request, shared by open and the sync");
    await B.close();
  });

  it("a sync with a write to push waits for them, and close() ends a request still under way", { timeout: 20_000 }, async () => {
    const db = relay.db("limits-before-push");
    const h = holdingHealth();
    const A = await replica(relay, db, "a", "node", { fetch: h.fetch });
    await A.exec("INSERT INTO todo(id) VALUES ('1')");
    const synced = A.sync();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(h.log, ["health"], "nothing pushed before the limits are known");
    h.answer();
    await synced;
    assert.deepEqual(h.log.slice(0, 3), ["health", "health answered", "push"]);
    assert.equal(A.status().pending, 0);
    await A.close();
    // A relay that never answers /v1/health: close() does not wait out the request's 30 s.
    const silent = holdingHealth();
    const C = await replica(relay, db, "c", "node", { fetch: silent.fetch });
    await C.close();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(silent.log, ["health", "health aborted"]);
  });
});

describe("guards", () => {
  it("a read-only replica pulls and applies, and refuses local writes before capturing", async () => {
    const db = relay.db("readonly");
    const W = await replica(relay, db, "w", "node");
    await W.exec("INSERT INTO todo(id, title) VALUES ('1', 'x')");
    await W.sync();
    const R = await openReplica({ url: relay.url, db, token: await relay.token("read", "reader", db), schema: TODO_SCHEMA, driver: "wasm" });
    await R.sync();
    assert.deepEqual(await R.query("SELECT id FROM todo"), [{ id: "1" }]);
    await assert.rejects(R.exec("INSERT INTO todo(id) VALUES ('2')"), (e: unknown) => e instanceof RelayError && e.code === "read_only");
    assert.equal(R.status().pending, 0);
    assert.deepEqual(await R.query("SELECT id FROM todo"), [{ id: "1" }]);
    await closeAll(W, R);
  });

  it("tables without a primary key and DDL outside the schema are errors", async () => {
    const db = relay.db("guards");
    await assert.rejects(
      replica(relay, db, "a", "node", { schema: ["CREATE TABLE IF NOT EXISTS nopk(a, b)"] }),
      (e: unknown) => e instanceof RelayError && e.code === "no_primary_key",
    );
    const A = await replica(relay, db, "a", "node");
    await assert.rejects(A.exec("CREATE TABLE sneaky(id INTEGER PRIMARY KEY)"), (e: unknown) => e instanceof RelayError && e.code === "ddl_outside_schema");
    assert.deepEqual(await A.query("SELECT name FROM sqlite_schema WHERE name = 'sneaky'"), []);
    assert.equal(A.status().pending, 0);
    await assert.rejects(A.exec("INSERT INTO _relay_meta VALUES ('x', 1)"));
    await A.close();
  });

  it("another version 1 than the log's stops sync with schema_conflict and changes nothing locally", async () => {
    const db = relay.db("mismatch");
    const W = await replica(relay, db, "w", "node", { schema: [...TODO_SCHEMA, "CREATE TABLE IF NOT EXISTS extra(id INTEGER PRIMARY KEY, v TEXT)"] });
    await W.exec("INSERT INTO todo(id, title) VALUES ('1', 'ok')");
    await W.exec("INSERT INTO extra VALUES (1, 'only W has this table')");
    await W.sync();
    const B = await replica(relay, db, "b", "wasm");
    await B.exec("INSERT INTO todo(id, title) VALUES ('mine', 'pending')");
    const before = await dump(B);
    await assert.rejects(B.sync(), (e: unknown) => e instanceof RelayError && e.code === "schema_conflict");
    assert.equal(await dump(B), before);
    assert.equal(B.status().cursor, 0);
    assert.equal(B.status().pending, 1, "the pushed write stays pending until its entry is applied");
    await closeAll(W, B);
  });

  it("a client id that another sub pushed first is refused by the relay with forbidden", async () => {
    const db = relay.db("sub");
    const M = await replica(relay, db, "mallory", "node");
    await M.exec("INSERT INTO todo(id) VALUES ('0')");
    await M.sync();
    const A = await openReplica({ url: relay.url, db, token: await relay.token("write", "alice", db), clientId: "mallory", schema: TODO_SCHEMA, driver: "node" });
    await A.exec("INSERT INTO todo(id) VALUES ('1')");
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden");
    await A.close();
  });
});
