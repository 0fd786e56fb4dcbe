import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { openNode } from "../client/drivers/node.ts";
import * as outbox from "../client/outbox.ts";
import { dump, replica } from "./support/replicas.ts";
import { useRelay } from "./support/fixture.ts";

/**
 * The outbox keeps one copy of an entry while what the local view holds of
 * it (`applied`) is what it ships (`changeset`): NULL stands for "the same".
 */
const relay = useRelay();
const dir = mkdtempSync(join(tmpdir(), "changeset-relay-outbox-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const bytes = (...b: number[]) => new Uint8Array(b);
const stored = (d: ReturnType<typeof openNode>) => d.all("SELECT cseq, applied IS NULL AS one, sent, v FROM _relay_outbox ORDER BY cseq").map((r) => ({ ...r }));

describe("outbox: one copy while applied = changeset", () => {
  it("an entry is stored once; a rebase that changes what it holds stores that, and one that restores it goes back to one copy", () => {
    const d = openNode(":memory:");
    outbox.createOutbox(d);
    outbox.enqueue(d, { cseq: 1, changeset: bytes(1, 2, 3), v: 1 }, true);
    assert.deepEqual(stored(d), [{ cseq: 1, one: 1, sent: 1, v: 1 }]);
    let [row] = outbox.pending(d);
    assert.deepEqual([...row!.applied], [1, 2, 3], "applied reads as the changeset");
    assert.equal(outbox.unchangedHead(d, [1], 1), true);

    // A sent entry re-applied on top of others: it holds something else now, and still ships its bytes.
    outbox.recapture(d, row!, bytes(9), undefined);
    [row] = outbox.pending(d);
    assert.deepEqual([[...row!.changeset], [...row!.applied]], [[1, 2, 3], [9]]);
    assert.equal(outbox.unchangedHead(d, [1], 1), false, "what it holds is not what the log will have");

    // Re-applied again, it holds its own bytes: one copy again.
    outbox.recapture(d, row!, bytes(1, 2, 3), undefined);
    assert.deepEqual(stored(d), [{ cseq: 1, one: 1, sent: 1, v: 1 }]);
    assert.equal(outbox.unchangedHead(d, [1], 1), true);

    // Rewritten (never taken): ships what it holds, under the new version, to be sent again.
    [row] = outbox.pending(d);
    outbox.recapture(d, row!, bytes(4, 5), 2);
    [row] = outbox.pending(d);
    assert.deepEqual([...row!.changeset], [4, 5]);
    assert.deepEqual(stored(d), [{ cseq: 1, one: 1, sent: 0, v: 2 }]);
    d.close();
  });

  it("a database with the two-copy outbox opens with one copy, keeps a copy that differs, and syncs", async () => {
    const db = relay.db("outbox-old-layout");
    const path = join(dir, "old.db");
    const A = await replica(relay, db, "a", "node", { path });
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'milk')");
    await A.exec("INSERT INTO todo(id, title) VALUES ('2', 'eggs')");
    await A.close();

    // The layout before: `applied` NOT NULL, a copy in every row.
    const raw = new DatabaseSync(path);
    raw.exec(`
      CREATE TABLE old(cseq INTEGER PRIMARY KEY, changeset BLOB NOT NULL, applied BLOB NOT NULL, sent INTEGER NOT NULL DEFAULT 0, v INTEGER NOT NULL DEFAULT 0);
      INSERT INTO old SELECT cseq, changeset, changeset, sent, v FROM _relay_outbox;
      DROP TABLE _relay_outbox;
      ALTER TABLE old RENAME TO _relay_outbox;
    `);
    raw.close();

    // Another old outbox, one entry's copy differing: the copy is kept.
    const d = openNode(":memory:");
    d.exec("CREATE TABLE _relay_outbox(cseq INTEGER PRIMARY KEY, changeset BLOB NOT NULL, applied BLOB NOT NULL, sent INTEGER NOT NULL DEFAULT 0, v INTEGER NOT NULL DEFAULT 0); INSERT INTO _relay_outbox VALUES (1, x'0102', x'0102', 1, 1), (2, x'0304', x'', 1, 1)");
    outbox.createOutbox(d);
    assert.deepEqual(stored(d), [{ cseq: 1, one: 1, sent: 1, v: 1 }, { cseq: 2, one: 0, sent: 1, v: 1 }]);
    assert.deepEqual(outbox.pending(d).map((r) => [...r.applied]), [[1, 2], []]);
    assert.equal(d.all("SELECT \"notnull\" AS nn FROM pragma_table_info('_relay_outbox') WHERE name = 'applied'")[0]!.nn, 0);
    d.close();

    const A2 = await replica(relay, db, "a", "node", { path });
    assert.equal(A2.status().pending, 2);
    const B = await replica(relay, db, "b", "wasm");
    await A2.sync();
    assert.equal(A2.status().pending, 0);
    await B.sync();
    assert.deepEqual(await B.query("SELECT id, title FROM todo ORDER BY id"), [{ id: "1", title: "milk" }, { id: "2", title: "eggs" }]);
    assert.equal(await dump(A2), await dump(B));
    await A2.close();
    await B.close();
  });

  it("pending writes under one copy are undone and re-applied correctly when others' entries come first", async () => {
    const db = relay.db("outbox-rebase");
    const A = await replica(relay, db, "a", "node"), B = await replica(relay, db, "b", "wasm");
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'milk')");
    await A.sync();
    await B.sync();
    await B.exec("UPDATE todo SET title = 'from B', done = 1 WHERE id = '1'");
    await B.sync();
    // A's pending writes, one copy each, are undone under B's entry and re-applied on top.
    await A.exec("UPDATE todo SET title = 'from A' WHERE id = '1'");
    await A.exec("INSERT INTO todo(id, title) VALUES ('2', 'eggs')");
    assert.deepEqual(await A.query("SELECT applied IS NULL AS one FROM _relay_outbox ORDER BY cseq"), [{ one: 1 }, { one: 1 }]);
    await A.sync();
    await B.sync();
    for (const r of [A, B]) assert.deepEqual(await r.query("SELECT id, title, done FROM todo ORDER BY id"), [{ id: "1", title: "from A", done: 1 }, { id: "2", title: "eggs", done: 0 }]);
    assert.equal(await dump(A), await dump(B));
    await A.close();
    await B.close();
  });

  it("a large entry's parts come from one read of its BLOB per pass, byte for byte", () => {
    const d = openNode(":memory:");
    outbox.createOutbox(d);
    const entry = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 7) % 251);
    outbox.enqueue(d, { cseq: 1, changeset: entry, v: 1 }, true);
    let reads = 0;
    const counted = new Proxy(d, { get: (t, k) => (k === "all" ? (...a: Parameters<typeof d.all>) => (reads++, t.all(...a)) : Reflect.get(t, k)) });
    const reader = new outbox.PartReader();
    const pass = () => [0, 1, 2, 3].map((i) => reader.read(counted, 1, i * 3000, Math.min(3000, entry.byteLength - i * 3000)));
    assert.deepEqual(Buffer.concat(pass()), Buffer.from(entry));
    assert.equal(reads, 1, "one read for four parts (substr() loaded the whole BLOB for each)");
    reader.read(counted, 1, 0, 3000);
    reader.read(counted, 1, 3000, 3000);
    assert.equal(reads, 2, "a new pass reads afresh");
    reader.drop();
    assert.throws(() => reader.read(counted, 2, 0, 10), /pending entry 2 has no bytes/);
    assert.throws(() => reader.read(counted, 1, 9000, 2000), /pending entry 1 has no bytes 9000..11000/);
    d.close();
  });
});
