/**
 * Snapshots (issue 15, DESIGN.md "Snapshots and compaction"): canonical
 * bytes of the confirmed state, equal across drivers and across the paths
 * replicas took to the same seq.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { openReplica, httpTransport, RelayError, type Replica, type ReplicaOptions } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { useRelay } from "./support/fixture.ts";
import { until } from "./support/wait.ts";
import { dump } from "./support/replicas.ts";

const relay = useRelay({ bindings: {} });

// A key declared out of column order, a REAL column holding integral values, BLOBs, NULLs.
export const SNAP_V1 = [
  "CREATE TABLE item(grp TEXT, n INTEGER, price REAL, data BLOB, PRIMARY KEY(n, grp))",
  "CREATE TABLE note(id TEXT PRIMARY KEY, body TEXT)",
];

const opened: Replica[] = [];
after(() => Promise.all(opened.map((r) => r.close())));
export async function open(db: string, client: string, driver: DriverKind, opts: Partial<ReplicaOptions> = {}): Promise<Replica> {
  const r = await openReplica({ url: relay.url, db, token: await relay.token("write", client, db), clientId: client, driver, migrations: [SNAP_V1], backoff: { baseMs: 1, capMs: 5 }, ...opts });
  opened.push(r);
  return r;
}

/** A history with inserts, updates and deletes over both tables, in many transactions. */
async function history(w: Replica, rounds: number): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await w.exec("INSERT INTO item VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET price = excluded.price", [`g${i % 3}`, i % 7, i % 2 ? 1.0 : i / 4, new Uint8Array([i, 0, 255])]);
    await w.exec("INSERT INTO note VALUES (?, ?) ON CONFLICT DO UPDATE SET body = excluded.body", [`k${(i * 5) % 11}`, i % 4 ? `body ${i}` : null]);
    if (i % 5 === 4) await w.exec("DELETE FROM note WHERE id = ?", [`k${i % 11}`]);
  }
  await w.sync();
}

describe("canonical snapshots", () => {
  it("same bytes and hash on both drivers, for replicas that reached the seq live, paged and in one page; pending writes left out", async () => {
    const db = relay.db("canon");
    const writer = await open(db, "writer", "node");
    const live = await open(db, "live-wasm", "wasm", { live: true });
    await history(writer, 40);
    const head = writer.status().cursor;
    assert.ok(head > 80);
    await until(() => live.status().cursor === head, "the live replica caught up");

    // Three entries a page: many steps instead of one grouped apply.
    const pagedT = httpTransport({ url: relay.url, db, token: await relay.token("write", "paged-wasm", db) });
    const pagedW = await open(db, "paged-wasm", "wasm", { transport: { push: pagedT.push, pull: (after, _l, s) => pagedT.pull(after, 3, s) } });
    await pagedW.sync();
    const grouped = await open(db, "grouped-node", "node");
    await grouped.sync();
    const groupedW = await open(db, "grouped-wasm", "wasm");
    await groupedW.sync();

    // Pending writes on one of them: the snapshot is the confirmed state, and the local view is untouched.
    await groupedW.exec("UPDATE item SET price = 99.5");
    await groupedW.exec("INSERT INTO note VALUES ('pending', 'not in the log')");
    const before = await dump(groupedW);

    const snaps = await Promise.all([writer, live, pagedW, grouped, groupedW].map((r) => r.snapshot()));
    for (const s of snaps) {
      assert.equal(s.seq, head);
      assert.equal(s.version, 1);
      assert.deepEqual(s.bytes, snaps[0]!.bytes);
      assert.equal(s.hash, snaps[0]!.hash);
    }
    assert.equal(snaps[0]!.hash, createHash("sha256").update(snaps[0]!.bytes).digest("hex"));
    assert.equal(await dump(groupedW), before, "building a snapshot leaves the local view as it was");
    assert.equal(groupedW.status().pending, 2);

    // A state that differs gives other bytes.
    await groupedW.sync();
    const after = await groupedW.snapshot();
    assert.notEqual(after.hash, snaps[0]!.hash);
  });

  it("rows are in primary-key order, tables by name, integral REALs stay REAL", async () => {
    const db = relay.db("order");
    const w = await open(db, "w", "wasm");
    await w.exec("INSERT INTO note VALUES ('b', 'x'), ('a', 'y')");
    await w.exec("INSERT INTO item VALUES ('z', 2, 3.0, NULL), ('a', 2, 1, NULL), ('q', 1, 2.5, x'00')");
    await assert.rejects(w.snapshot(), (e: RelayError) => e.code === "snapshot_unavailable", "its schema version is not in the log yet");
    await w.sync();
    const { bytes } = await w.snapshot();
    const { decodeChangeset } = await import("../protocol/changeset.ts");
    const cs = decodeChangeset(bytes);
    assert.deepEqual(cs.tables.map((t) => t.name), ["item", "note"]);
    assert.deepEqual(cs.changes.map((c) => c.new!.slice(0, 2)), [["q", 1], ["a", 2], ["z", 2], ["a", "y"], ["b", "x"]]);
    assert.deepEqual(cs.changes[2]!.integralReals?.new, [2]);
    assert.deepEqual([...cs.tables[0]!.pkRaw!], [2, 1, 0, 0]);
  });
});
