import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { conflictKind, landed } from "../client/apply.ts";
import { capture } from "../client/capture.ts";
import { openDriver } from "../client/drivers/index.ts";
import { Emitter } from "../client/events.ts";
import * as outbox from "../client/outbox.ts";
import { confirmedPrefix, lastOwnCseq } from "../client/rebase.ts";
import { Step } from "../client/step.ts";
import * as store from "../client/store.ts";
import type { ReplicaEvents } from "../client/types.ts";
import { decodeChangeset } from "../protocol/changeset.ts";
import { sameBytes } from "../protocol/codec.ts";
import type { LogEntry, PushEntry } from "../protocol/messages.ts";
import { captured } from "./support/captured.ts";

/** The client's plain parts on their own: the outbox's batching, rebase's and apply's pure decisions, the step. */

const sized = (cseq: number, bytes: number): PushEntry => ({ cseq, changeset: new Uint8Array(bytes) });
const cseqs = (b: PushEntry[]) => b.map((e) => e.cseq);

/** Changesets captured by a real session over `todo(id PRIMARY KEY, title)`. */
const capturedTodo = (setup: string, sql: string) => captured(`CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT); ${setup}`, sql);

describe("outbox.batchByBytes", () => {
  it("takes the leading entries that fit the budget together", () => {
    assert.deepEqual(cseqs(outbox.batchByBytes([sized(1, 4), sized(2, 4), sized(3, 4)], 8)), [1, 2]);
    assert.deepEqual(cseqs(outbox.batchByBytes([sized(1, 4), sized(2, 4)], 100)), [1, 2]);
    assert.deepEqual(cseqs(outbox.batchByBytes([], 8)), []);
  });
  it("an entry larger than the budget goes alone, never with others", () => {
    assert.deepEqual(cseqs(outbox.batchByBytes([sized(1, 20), sized(2, 1)], 8)), [1]);
    assert.deepEqual(cseqs(outbox.batchByBytes([sized(1, 2), sized(2, 20)], 8)), [1]);
  });
});

describe("rebase's pure parts", () => {
  const own = (seq: number, cseq: number, byte: number): LogEntry => ({ seq, client: "me", cseq, changeset: new Uint8Array([byte]), ts: 0 });
  const row = (cseq: number, byte: number) => ({ cseq, changeset: new Uint8Array([byte]), applied: new Uint8Array([byte]), sent: true, v: 0 });
  it("confirmedPrefix stops at the first foreign entry, other cseq or other bytes", () => {
    assert.equal(confirmedPrefix("me", [own(1, 1, 7), own(2, 2, 8)], [row(1, 7), row(2, 8)]), 2);
    assert.equal(confirmedPrefix("me", [{ ...own(1, 1, 7), client: "x" }], [row(1, 7)]), 0);
    assert.equal(confirmedPrefix("me", [own(1, 1, 7), own(2, 3, 8)], [row(1, 7), row(2, 8)]), 1);
    assert.equal(confirmedPrefix("me", [own(1, 1, 9)], [row(1, 7)]), 0);
    assert.equal(confirmedPrefix("me", [own(1, 1, 7)], []), 0);
  });
  it("confirmedPrefix goes on past schema entries of versions the local tables have, not newer ones", () => {
    const schema = (seq: number, v: number): LogEntry => ({ seq, client: "x", cseq: 0, changeset: new Uint8Array(0), ts: 0, v, schema: ["CREATE TABLE t(id PRIMARY KEY)"] });
    const at = (e: LogEntry, v: number): LogEntry => ({ ...e, v });
    const rows = [{ ...row(1, 7), v: 2 }, { ...row(2, 8), v: 2 }];
    // A fresh replica's first push: its versions, then its writes.
    assert.equal(confirmedPrefix("me", [schema(1, 1), schema(2, 2), at(own(3, 1, 7), 2), at(own(4, 2, 8), 2)], rows, 2), 4);
    assert.equal(confirmedPrefix("me", [at(own(1, 1, 7), 2), schema(2, 2), at(own(3, 2, 8), 2)], rows, 2), 3);
    // A version the local tables lack runs a migration: the full rebase.
    assert.equal(confirmedPrefix("me", [at(own(1, 1, 7), 2), schema(2, 3), at(own(3, 2, 8), 2)], rows, 2), 1);
    assert.equal(confirmedPrefix("me", [schema(1, 1)], [], undefined), 0);
  });
  it("sameBytes finds a difference in any byte, whatever the lengths and alignments", () => {
    const base = new Uint8Array(64).map((_, i) => i * 7);
    for (let len = 0; len <= 21; len++) {
      for (const [oa, ob] of [[0, 0], [4, 8], [1, 0], [3, 5]] as const) {
        const a = new Uint8Array(new ArrayBuffer(40), oa, len), b = new Uint8Array(new ArrayBuffer(40), ob, len);
        a.set(base.subarray(0, len));
        b.set(base.subarray(0, len));
        assert.equal(sameBytes(a, b), true, `len ${len}, offsets ${oa}/${ob}`);
        for (let i = 0; i < len; i++) {
          b[i]! ^= 0x10;
          assert.equal(sameBytes(a, b), false, `len ${len}, offsets ${oa}/${ob}, byte ${i}`);
          b[i]! ^= 0x10;
        }
        if (len > 0) assert.equal(sameBytes(a, b.subarray(1)), false);
      }
    }
    // Large ones (memcmp where the runtime has it), at an offset.
    const big = new Uint8Array(100_003).map((_, i) => i * 31);
    const copy = new Uint8Array(100_010);
    copy.set(big, 7);
    const view = copy.subarray(7, 7 + big.length);
    assert.equal(sameBytes(big, view), true);
    for (const i of [0, 50_000, 100_002]) {
      view[i]! ^= 1;
      assert.equal(sameBytes(big, view), false, `byte ${i}`);
      view[i]! ^= 1;
    }
  });
  it("lastOwnCseq", () => {
    assert.equal(lastOwnCseq("me", [own(1, 4, 0), { ...own(2, 9, 0), client: "x" }, own(3, 2, 0)]), 4);
    assert.equal(lastOwnCseq("me", []), 0);
  });
});

describe("the conflict decision per change", () => {
  const names = ["id", "title"];
  const change = (setup: string, sql: string) => decodeChangeset(capturedTodo(setup, sql)).changes[0]!;
  it("predicts what SQLite will report", () => {
    const insert = change("", "INSERT INTO todo VALUES ('1', 'a')");
    assert.equal(conflictKind(insert, names, null), undefined);
    assert.equal(conflictKind(insert, names, { id: "1", title: "b" }), "conflict");
    const update = change("INSERT INTO todo VALUES ('1', 'a')", "UPDATE todo SET title = 'b'");
    assert.equal(conflictKind(update, names, null), "notfound");
    assert.equal(conflictKind(update, names, { id: "1", title: "a" }), undefined);
    assert.equal(conflictKind(update, names, { id: "1", title: "z" }), "data");
  });
  it("tells whether a kept change landed", () => {
    const target = { names, byKey: "" };
    const update = change("INSERT INTO todo VALUES ('1', 'a')", "UPDATE todo SET title = 'b'");
    assert.equal(landed({ change: update, target }, { id: "1", title: "b" }), true);
    assert.equal(landed({ change: update, target }, { id: "1", title: "a" }), false);
    const del = change("INSERT INTO todo VALUES ('1', 'a')", "DELETE FROM todo");
    assert.equal(landed({ change: del, target }, null), true);
    assert.equal(landed({ change: del, target }, { id: "1", title: "a" }), false);
  });
});

describe("the step", () => {
  async function open() {
    const d = await openDriver("node", ":memory:");
    d.exec("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)");
    store.migrate(d);
    const events = new Emitter<ReplicaEvents>();
    const changes: number[] = [];
    events.on("change", (e) => changes.push(e.cursor));
    return { d, step: new Step(d, "me", {}, events), changes };
  }
  const foreign = (seq: number, sql: string, setup = ""): LogEntry => ({ seq, client: "x", cseq: seq, changeset: capturedTodo(setup, sql), ts: 0 });

  it("applies a page in one transaction, owns the cursor, skips what it has, refuses a gap", async () => {
    const { d, step, changes } = await open();
    const e1 = foreign(1, "INSERT INTO todo VALUES ('1', 'a')");
    const e2 = foreign(2, "INSERT INTO todo VALUES ('2', 'b')");
    assert.equal(step.page([e1]), true);
    assert.equal(step.cursor(), 1);
    assert.equal(step.page([e1, e2]), true, "e1 again is skipped");
    assert.equal(step.cursor(), 2);
    assert.equal(store.getMeta(d, "cursor"), 2);
    assert.equal(step.page([foreign(4, "INSERT INTO todo VALUES ('4', 'd')")]), false, "a gap");
    assert.equal(step.cursor(), 2);
    assert.deepEqual(changes, [1, 2]);
    d.close();
  });

  it("a failed step changes nothing, cursor included", async () => {
    const { d, step } = await open();
    const good = foreign(1, "INSERT INTO todo VALUES ('1', 'a')");
    const wrongTable: LogEntry = { seq: 2, client: "x", cseq: 2, changeset: (() => {
      const src = new DatabaseSync(":memory:");
      src.exec("CREATE TABLE other(id PRIMARY KEY)");
      const s = src.createSession();
      src.exec("INSERT INTO other VALUES (1)");
      return s.changeset();
    })(), ts: 0 };
    assert.throws(() => step.page([good, wrongTable]), { code: "schema_mismatch" });
    assert.equal(step.cursor(), 0);
    assert.deepEqual(d.all("SELECT count(*) AS n FROM todo")[0]!.n, 0);
    d.close();
  });

  it("numbers local transactions after the last one, also past own entries the log returns", async () => {
    const { d, step } = await open();
    assert.equal(step.nextCseq(), 1);
    step.page([{ ...foreign(1, "INSERT INTO todo VALUES ('1', 'a')"), client: "me", cseq: 5 }]);
    assert.equal(step.nextCseq(), 6);
    assert.equal(store.getMeta(d, "last_cseq"), 5);
    d.close();
  });

  it("a capture writes no numbering row; a fresh step (a reopen) numbers after the outbox, then after what left it", async () => {
    const { d, step } = await open();
    for (const id of ["1", "2"]) await capture(d, step, (tx) => tx.exec("INSERT INTO todo VALUES (?, 'x')", [id]), () => false);
    assert.deepEqual(outbox.pending(d).map((p) => p.cseq), [1, 2]);
    assert.equal(store.getMeta(d, "last_cseq"), null, "the outbox rows record the numbers");
    const reopened = new Step(d, "me", {}, new Emitter<ReplicaEvents>());
    assert.equal(reopened.nextCseq(), 3);
    // Both confirmed: they leave the outbox, and the number is stored in the same step.
    assert.equal(reopened.acked([{ cseq: 1, seq: 1 }, { cseq: 2, seq: 2 }]), true);
    assert.equal(outbox.pendingCount(d), 0);
    assert.equal(store.getMeta(d, "last_cseq"), 2);
    assert.equal(new Step(d, "me", {}, new Emitter<ReplicaEvents>()).nextCseq(), 3);
    d.close();
  });
});
