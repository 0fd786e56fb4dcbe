import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { encode, decode } from "../protocol/codec.ts";
import { until, openSocket } from "./support/wait.ts";
import { insertChangeset, pullAll } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";

/**
 * The log object appends socket pushes in batches (all that arrived before
 * its next turn). Batching must not be visible: arrival order, all-or-nothing
 * per push, every ack and every entry delivered in log order.
 */
const relay = useRelay();

describe("batched socket pushes", () => {
  it("a burst from several writers: gapless, in each writer's order, every ack and entry delivered once", async () => {
    const db = "burst";
    const reader = await openSocket(relay, db, "reader");
    reader.ws.send(encode({ t: "sub", after: 0 }));
    await until(() => reader.frames.length === 1, "subscribed");
    const writers = await Promise.all(["w0", "w1", "w2"].map((w) => openSocket(relay, db, w)));
    const PER = 60;
    for (let i = 1; i <= PER; i++) {
      writers.forEach((w, wi) => w.ws.send(encode({ t: "push", id: i, client: `w${wi}`, entries: [{ cseq: i, changeset: insertChangeset([[wi * 1000 + i, `w${wi} #${i}`]]) }] })));
    }
    await until(() => writers.every((w) => w.frames.length === PER), "every push acked");
    const entries = () => reader.frames.slice(1).flatMap((f) => f.entries);
    await until(() => entries().length === 3 * PER, "the reader has every entry");

    assert.deepEqual(entries().map((e) => e.seq), Array.from({ length: 3 * PER }, (_, i) => i + 1));
    writers.forEach((w, wi) => {
      assert.ok(w.frames.every((f) => f.t === "ack"), JSON.stringify(w.frames.find((f) => f.t !== "ack")));
      assert.deepEqual(w.frames.map((f) => f.id), Array.from({ length: PER }, (_, i) => i + 1));
      const seqs = w.frames.map((f) => f.acks[0].seq);
      assert.deepEqual([...seqs].sort((a, b) => a - b), seqs, "a writer's entries keep its order in the log");
      assert.deepEqual(entries().filter((e) => e.client === `w${wi}`).map((e) => e.seq), seqs);
    });
    const log = await pullAll(relay.url, db, await relay.token("read", "x", db));
    assert.deepEqual(log.map((e) => e.seq), entries().map((e) => e.seq));
    for (const s of [reader, ...writers]) s.ws.close();
  });

  it("a refused push in a burst is refused alone", async () => {
    const db = "burst-conflict";
    const w = await openSocket(relay, db, "c");
    const push = (id: number, cseq: number, v: string) => w.ws.send(encode({ t: "push", id, client: "c", entries: [{ cseq, changeset: insertChangeset([[cseq, v]]) }] }));
    push(1, 1, "one");
    push(2, 1, "other bytes for cseq 1");
    push(3, 2, "two");
    await until(() => w.frames.length === 3, "three answers");
    assert.deepEqual(w.frames.map((f) => [f.t, f.id]), [["ack", 1], ["error", 2], ["ack", 3]]);
    assert.equal(w.frames[1].error.code, "cseq_conflict");
    assert.deepEqual(w.frames[2].acks, [{ cseq: 2, seq: 2 }]);
    assert.equal((await pullAll(relay.url, db, await relay.token("read", "x", db))).length, 2);
    w.ws.close();
  });

  it("sockets do not negotiate permessage-deflate", async () => {
    const { ws } = await openSocket(relay, "nodeflate", "c");
    assert.equal(ws.extensions, "");
    ws.close();
  });
});
