/**
 * The log's rules (worker/log-store.ts) on their own, over a real SQLite
 * (node:sqlite behind the DO's sql.exec shape, test/support/do-sql.ts). The
 * relay tests check the same rules through workerd; these pin them down
 * without a relay and reach cases the wire cannot (storage damage, knownHead).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as store from "../worker/log-store.ts";
import { PULL_BYTE_BUDGET, STORAGE_CHUNK_BYTES } from "../protocol/limits.ts";
import { isRelayError } from "../protocol/errors.ts";
import { doSql } from "./support/do-sql.ts";

function fresh() {
  const sql = doSql();
  store.migrate(sql);
  return sql;
}
const bytes = (n: number, fill = 7) => new Uint8Array(n).fill(fill);
const entry = (cseq: number, n = 10, fill = cseq) => ({ cseq, changeset: bytes(n, fill) });
const count = (sql: ReturnType<typeof fresh>, table: string) => sql.exec<{ n: number }>(`SELECT count(*) AS n FROM ${table}`).one().n;

describe("log-store: schema", () => {
  it("migrate creates an empty log and is idempotent", () => {
    const sql = fresh();
    store.migrate(sql);
    assert.equal(store.head(sql), 0);
    assert.deepEqual(store.pull(sql, 0, 10), { entries: [], head: 0, more: false });
  });
});

describe("log-store: push", () => {
  it("appends at consecutive seqs, acks each cseq and returns what it appended", () => {
    const sql = fresh();
    const a = store.push(sql, "a", [entry(1), entry(2)], 1000);
    assert.deepEqual(a.acks, [{ cseq: 1, seq: 1 }, { cseq: 2, seq: 2 }]);
    assert.equal(a.head, 2);
    assert.deepEqual(a.appended.map((e) => [e.seq, e.client, e.cseq, e.ts]), [[1, "a", 1, 1000], [2, "a", 2, 1000]]);
    const b = store.push(sql, "b", [entry(1)], 2000);
    assert.deepEqual(b.acks, [{ cseq: 1, seq: 3 }]);
    assert.equal(store.head(sql), 3);
  });

  it("a retry with the same bytes gets the original seq and appends nothing", () => {
    const sql = fresh();
    store.push(sql, "a", [entry(1), entry(2)], 1);
    const again = store.push(sql, "a", [entry(1), entry(2), entry(3)], 2);
    assert.deepEqual(again.acks, [{ cseq: 1, seq: 1 }, { cseq: 2, seq: 2 }, { cseq: 3, seq: 3 }]);
    assert.deepEqual(again.appended.map((e) => e.seq), [3]);
    assert.equal(count(sql, "relay_log"), 3);
  });

  it("other bytes for a pushed cseq, or a cseq below the highest never pushed, are cseq_conflict", () => {
    const sql = fresh();
    store.push(sql, "a", [entry(1), entry(5)], 1);
    assert.throws(() => store.push(sql, "a", [entry(1, 10, 99)], 2), (e) => isRelayError(e, "cseq_conflict"));
    assert.throws(() => store.push(sql, "a", [entry(3)], 2), (e) => isRelayError(e, "cseq_conflict"));
    // Another client's cseqs are its own.
    assert.deepEqual(store.push(sql, "b", [entry(3)], 2).acks, [{ cseq: 3, seq: 3 }]);
  });

  it("a refused push inside transactionSync leaves the log as it was, entries before the refusal included", () => {
    const sql = fresh();
    store.push(sql, "a", [entry(1)], 1);
    assert.throws(
      () => sql.transactionSync(() => store.push(sql, "a", [entry(2), entry(3), entry(1, 10, 42)], 2)),
      (e) => isRelayError(e, "cseq_conflict"),
    );
    assert.equal(store.head(sql), 1);
    assert.deepEqual(store.pull(sql, 0, 10).entries.map((e) => e.cseq), [1]);
  });

  it("knownHead saves the head query and is trusted", () => {
    const sql = fresh();
    const first = store.push(sql, "a", [entry(1)], 1);
    assert.deepEqual(store.push(sql, "b", [entry(1)], 1, first.head).acks, [{ cseq: 1, seq: 2 }]);
  });
});

describe("log-store: storage in chunks", () => {
  it("a changeset above one chunk is split across relay_chunk and read back byte-identical", () => {
    const sql = fresh();
    const big = new Uint8Array(STORAGE_CHUNK_BYTES * 2 + 5).map((_, i) => i % 251);
    store.push(sql, "a", [{ cseq: 1, changeset: big }, entry(2)], 1);
    assert.equal(count(sql, "relay_chunk"), 3);
    const page = store.pull(sql, 0, 10, Number.MAX_SAFE_INTEGER);
    assert.deepEqual(page.entries[0]!.changeset, big);
    assert.deepEqual(page.entries[1]!.changeset, bytes(10, 2));
    // The retry check compares against the stored chunks too.
    assert.deepEqual(store.push(sql, "a", [{ cseq: 1, changeset: big }], 2).acks, [{ cseq: 1, seq: 1 }]);
  });

  it("a chunked entry with a chunk missing is an internal error, not a short changeset", () => {
    const sql = fresh();
    store.push(sql, "a", [{ cseq: 1, changeset: bytes(STORAGE_CHUNK_BYTES + 1) }], 1);
    sql.exec("DELETE FROM relay_chunk WHERE idx = 1");
    assert.throws(() => store.pull(sql, 0, 10), (e) => isRelayError(e, "internal"));
  });
});

describe("log-store: pull", () => {
  const sql = fresh();
  for (let c = 1; c <= 5; c++) store.push(sql, "a", [entry(c, 100)], c);

  it("pages by limit, with `more` while entries remain", () => {
    assert.deepEqual(store.pull(sql, 0, 2).entries.map((e) => e.seq), [1, 2]);
    assert.equal(store.pull(sql, 0, 2).more, true);
    assert.deepEqual(store.pull(sql, 3, 10), { ...store.pull(sql, 3, 10), head: 5, more: false });
    assert.deepEqual(store.pull(sql, 3, 10).entries.map((e) => e.seq), [4, 5]);
  });

  it("stops at the byte budget but never returns an empty page while entries remain", () => {
    assert.deepEqual(store.pull(sql, 0, 10, 250).entries.map((e) => e.seq), [1, 2]);
    assert.deepEqual(store.pull(sql, 0, 10, 1).entries.map((e) => e.seq), [1]);
    assert.equal(store.pull(sql, 0, 10, 1).more, true);
    assert.equal(store.pull(sql, 0, 10).entries.length, 5, `the default budget (${PULL_BYTE_BUDGET}) holds them all`);
  });

  it("after at or beyond the head is an empty page, not an error", () => {
    assert.deepEqual(store.pull(sql, 5, 10), { entries: [], head: 5, more: false });
    assert.deepEqual(store.pull(sql, 99, 10), { entries: [], head: 5, more: false });
  });
});
