import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { openReplica, RelayError } from "../client/index.ts";
import { until } from "./support/wait.ts";
import { dump, replica, TODO_SCHEMA } from "./support/replicas.ts";
import { pullAll } from "./support/http.ts";
import type { WebSocketLike } from "../client/transport/socket.ts";
import { useRelay } from "./support/fixture.ts";

/**
 * Behaviour kept while the hot paths got faster (see README "Benchmarks"):
 * fewer bookkeeping queries per local transaction, pages of entries applied
 * as one changeset when nothing conflicts, acks applied in bursts.
 */
const relay = useRelay();


describe("local transactions", () => {
  it("exec reports each statement's own changes", async () => {
    const A = await replica(relay, relay.db("changes"), "a", "node");
    const counts = await A.transaction(async (tx) => [
      (await tx.exec("INSERT INTO todo(id, title) VALUES ('1', 'a'), ('2', 'b'), ('3', 'c')")).changes,
      (await tx.exec("UPDATE todo SET done = 1")).changes,
      (await tx.exec("SELECT * FROM todo")).changes,
      (await tx.exec("DELETE FROM todo WHERE id = ?", ["2"])).changes,
    ]);
    assert.deepEqual(counts, [3, 3, 0, 1]);
  });

  for (const driver of ["node", "wasm"] as const) {
    it(`DDL is refused however it is run inside a transaction (${driver})`, async () => {
      const A = await replica(relay, relay.db("ddl"), "a", driver);
      await assert.rejects(
        A.transaction(async (tx) => {
          await tx.exec("INSERT INTO todo(id, title) VALUES ('1', 'x')");
          await tx.query("CREATE TABLE sneaky(id INTEGER PRIMARY KEY)");
        }),
        (e: unknown) => e instanceof RelayError && e.code === "ddl_outside_schema",
      );
      await assert.rejects(
        A.transaction(async (tx) => {
          await tx.exec("CREATE TABLE sneaky2(id INTEGER PRIMARY KEY)");
          await tx.exec("INSERT INTO todo(id, title) VALUES ('2', 'y')");
        }),
        (e: unknown) => e instanceof RelayError && e.code === "ddl_outside_schema",
      );
      assert.deepEqual(await A.query("SELECT * FROM todo"), []);
      assert.equal(A.status().pending, 0);
    });
  }
});

describe("applying pages", () => {
  it("a page with one conflicting entry: that entry under the policy, the rest applied, replicas converge", async () => {
    const db = relay.db("page-conflict");
    const A = await replica(relay, db, "a", "node");
    const B = await replica(relay, db, "b", "node");
    const C = await replica(relay, db, "c", "node");
    await C.exec("INSERT INTO todo(id, title) VALUES ('x', 'shared')");
    await C.sync();
    await B.sync();
    await B.exec("UPDATE todo SET title = 'edited by b' WHERE id = 'x'"); // concurrent with C's delete
    await C.exec("DELETE FROM todo WHERE id = 'x'");
    await C.sync(); // seq 3: delete (seq 1 is the schema, 2 the insert)
    await B.sync(); // seq 4: the update, NOTFOUND everywhere it lands after the delete
    for (let i = 0; i < 5; i++) await B.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`b${i}`, `row ${i}`]);
    await B.sync(); // seqs 5..9
    const ev = await A.sync(); // one page: 1..9
    assert.equal(ev.cursor, 9);
    const conflicts = await A.conflicts();
    assert.deepEqual(conflicts.map((c) => [c.kind, c.seq, c.client]), [["notfound", 4, "b"]]);
    await C.sync();
    assert.equal(await dump(A), await dump(B));
    assert.equal(await dump(A), await dump(C));
    assert.equal((await A.query("SELECT * FROM todo")).length, 5);
  });
});

describe("the schema cache", () => {
  it("is read again after the log's DDL, in the same step", async () => {
    const db = relay.db("schema-cache");
    const B = await replica(relay, db, "b", "node");
    const A0 = await replica(relay, db, "a0", "node");
    await A0.exec("INSERT INTO todo(id, title) VALUES ('1', 'first')");
    await A0.sync();
    await B.sync(); // B has read todo's definition: 4 columns
    const A = await openReplica({ url: relay.url, db, token: await relay.token("write", "a", db), clientId: "a", driver: "node", migrations: [TODO_SCHEMA, ["ALTER TABLE todo ADD COLUMN extra TEXT"]] });
    await A.sync();
    await A.exec("INSERT INTO todo(id, title, extra) VALUES ('2', 'second', 'x')");
    await A.sync();
    await B.sync(); // version 2, then a 5-column entry: refused if B still believed in 4 columns
    assert.deepEqual(await B.query("SELECT id, extra FROM todo ORDER BY id"), [{ id: "1", extra: null }, { id: "2", extra: "x" }]);
    await A.close();
  });
});

describe("live acks", () => {
  it("a burst of writes is confirmed through its acks alone, without an HTTP pull", async () => {
    const db = relay.db("ack-burst");
    let pulls = 0;
    const spy: typeof fetch = (input, init) => {
      if (String(input).includes("/pull")) pulls++;
      return fetch(input, init);
    };
    const A = await replica(relay, db, "a", "node", { live: true, fetch: spy });
    await until(() => A.status().connected, "connected");
    await A.sync(); // a new replica's schema version goes out over HTTP (with a pull) first
    pulls = 0;
    for (let i = 0; i < 300; i++) await A.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`r${i}`, `row ${i}`]);
    await until(() => A.status().pending === 0, "every write confirmed");
    assert.equal(A.status().cursor, 301, "the schema entry and 300 writes");
    assert.equal(pulls, 0);
    const B = await replica(relay, db, "b", "node");
    await B.sync();
    assert.equal(await dump(A), await dump(B));
  });

  it("writes sent straight after their commit survive the socket dropping between them", async () => {
    const db = relay.db("direct-drops");
    const sockets: WebSocketLike[] = [];
    const A = await replica(relay, db, "a", "node", {
      live: true,
      createWebSocket: (url) => {
        const ws = new WebSocket(url) as unknown as WebSocketLike;
        sockets.push(ws);
        return ws;
      },
    });
    await until(() => A.status().connected, "connected");
    for (let i = 0; i < 120; i++) {
      if (i === 80) await until(() => sockets.length === 2, "a second connection");
      if (i === 40 || i === 80) sockets.at(-1)!.close(); // the next writes find it closing or closed
      await A.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`r${i}`, `row ${i}`]);
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await until(() => A.status().pending === 0 && A.status().connected, "every write confirmed after reconnecting", 20_000);
    assert.ok(sockets.length >= 3, `${sockets.length} connections`);
    const log = await pullAll(relay.url, db, await relay.token("read", "x", db));
    assert.deepEqual(log.filter((e) => !e.schema).map((e) => e.cseq), Array.from({ length: 120 }, (_, i) => i + 1));
    const B = await replica(relay, db, "b", "node");
    await B.sync();
    assert.equal(await dump(A), await dump(B));
  });
});
