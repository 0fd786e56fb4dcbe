import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { encode, decode } from "../protocol/codec.ts";
import type { Replica } from "../client/index.ts";
import { until, openSocket } from "./support/wait.ts";
import { dump, replica } from "./support/replicas.ts";
import { insertChangeset } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";

/**
 * A writer's own entries reach its log view through the relay's ack, not by
 * coming back over the wire: the socket does not echo a push to its sender,
 * and sync() does not download what it just pushed.
 */
const relay = useRelay();


const titles = async (r: Replica) => (await r.query<{ title: string }>("SELECT title FROM todo ORDER BY id")).map((x) => x.title);

describe("socket", () => {

  it("a push is acked to its socket and delivered to every other subscriber, not echoed", async () => {
    const db = relay.db("echo");
    const a = await openSocket(relay, db, "a");
    const b = await openSocket(relay, db, "b");
    for (const s of [a, b]) s.ws.send(encode({ t: "sub", after: 0 }));
    await until(() => a.frames.length === 1 && b.frames.length === 1, "both subscribed");
    a.ws.send(encode({ t: "push", id: 1, client: "a", entries: [{ cseq: 1, changeset: insertChangeset([[1, "x"]]) }] }));
    await until(() => b.frames.length === 2 && a.frames.length === 2, "ack and delivery");
    // A frame sent after the push: once it is acked, nothing more of the push can be on its way.
    b.ws.send(encode({ t: "push", id: 1, client: "b", entries: [{ cseq: 1, changeset: insertChangeset([[2, "y"]]) }] }));
    await until(() => a.frames.length === 3 && b.frames.length === 3, "second push");
    assert.deepEqual(a.frames.slice(1).map((f) => [f.t, f.acks?.[0]?.seq ?? f.entries?.[0]?.seq]), [["ack", 1], ["entries", 2]]);
    assert.deepEqual(b.frames.slice(1).map((f) => [f.t, f.acks?.[0]?.seq ?? f.entries?.[0]?.seq]), [["entries", 1], ["ack", 2]]);
    a.ws.close();
    b.ws.close();
  });
});

describe("replica", () => {
  it("live: own writes are confirmed by their acks, interleaved with others' entries, and converge", async () => {
    const db = relay.db("live-acks");
    const A = await replica(relay, db, "a", "node", { live: true });
    const B = await replica(relay, db, "b", "wasm", { live: true });
    await until(() => A.status().connected && B.status().connected, "connected");
    for (let i = 0; i < 20; i++) {
      await A.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`a${i}`, `from a ${i}`]);
      await B.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`b${i}`, `from b ${i}`]);
    }
    await until(() => A.status().cursor === 41 && B.status().cursor === 41, "both at the head"); // seq 1 is the schema
    assert.equal(A.status().pending, 0);
    assert.equal(B.status().pending, 0);
    assert.equal(await dump(A), await dump(B));
    assert.equal((await titles(A)).length, 40);
  });

  it("sync() does not download the entries it just pushed", async () => {
    const db = relay.db("http-acks");
    const pulls: { after: string | null; bytes: number }[] = [];
    const spy: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      const url = new URL(String(input));
      if (url.pathname.endsWith("/pull")) pulls.push({ after: url.searchParams.get("after"), bytes: (await res.clone().arrayBuffer()).byteLength });
      return res;
    };
    const A = await replica(relay, db, "a", "node", { fetch: spy });
    await A.transaction(async (tx) => {
      for (let i = 0; i < 200; i++) await tx.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`r${i}`, `row ${i} with some text`]);
    });
    const ev = await A.sync();
    assert.deepEqual([ev.pushed, ev.cursor, A.status().pending], [1, 2, 0], "seq 1 is the schema version the push added, seq 2 the write");
    assert.deepEqual(pulls.map((p) => p.after), ["2"]);
    assert.ok(pulls[0]!.bytes < 100, `the pull after the push carried ${pulls[0]!.bytes} bytes`);
    const B = await replica(relay, db, "b", "node");
    await B.sync();
    assert.equal(await dump(A), await dump(B));
  });

  it("when others' entries come first, the acked entries arrive by pull, in log order", async () => {
    const db = relay.db("gap");
    const A = await replica(relay, db, "a", "node");
    const B = await replica(relay, db, "b", "node");
    await B.exec("INSERT INTO todo(id, title) VALUES ('1', 'b first')");
    await B.sync();
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'a second')"); // the same row: the later entry wins
    const ev = await A.sync();
    assert.deepEqual([ev.cursor, A.status().pending], [3, 0]);
    await B.sync();
    assert.deepEqual(await titles(A), ["a second"]);
    assert.equal(await dump(A), await dump(B));
  });
});
