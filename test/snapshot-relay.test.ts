/**
 * Snapshots on the relay (issue 15): stored in parts, published atomically,
 * hashes compared across token subjects, a disagreeing snapshot flagged and
 * never used for trimming, and a restart mid-upload leaving nothing half-made.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openReplica, RelayError, type Replica } from "../client/index.ts";
import { snapshotClient } from "../client/transport/snapshots.ts";
import { SNAPSHOT_PART_BYTES } from "../worker/snapshot-store.ts";
import { useRelay, type RelayFixture } from "./support/fixture.ts";

const relay = useRelay({ bindings: { SNAPSHOT_QUORUM: "2", RETAIN_ENTRIES: "0", RETAIN_SECONDS: "0" } });
const durable = useRelay({ persist: true, bindings: {} });

const SCHEMA = ["CREATE TABLE blob(id INTEGER PRIMARY KEY, data BLOB)"];
const opened: Replica[] = [];
after(() => Promise.all(opened.map((r) => r.close())));

async function open(r: RelayFixture, db: string, client: string): Promise<Replica> {
  const rep = await openReplica({ url: r.url, db, token: await r.token("write", client, db), clientId: client, driver: "node", migrations: [SCHEMA], backoff: { baseMs: 1, capMs: 5 } });
  opened.push(rep);
  return rep;
}
const client = async (r: RelayFixture, db: string, sub: string, role: "read" | "write" | "admin" = "write") => snapshotClient({ url: r.url, db, token: await r.token(role, sub, db) });

describe("snapshots on the relay", () => {
  it("a snapshot larger than a part is uploaded in parts and comes back byte for byte", async () => {
    const db = relay.db("parts");
    const w = await open(relay, db, "w");
    await w.exec("INSERT INTO blob VALUES (1, randomblob(?)), (2, randomblob(?))", [SNAPSHOT_PART_BYTES, SNAPSHOT_PART_BYTES / 2]);
    await w.sync();
    const s = await w.snapshot();
    assert.ok(s.bytes.byteLength > SNAPSHOT_PART_BYTES);
    const parts: number[] = [];
    const info = await (await client(relay, db, "w")).upload(s, (done) => parts.push(done));
    assert.deepEqual(parts, [1, 2]);
    assert.deepEqual([info.seq, info.hash, info.agreeing, info.flagged], [s.seq, s.hash, 1, false]);
    const reader = await client(relay, db, "someone", "read");
    const latest = await reader.latest();
    assert.equal(latest?.id, info.id);
    assert.deepEqual(latest?.schema.map((x) => x.version), [1]);
    assert.deepEqual(await reader.download(latest!), s.bytes);
  });

  it("refuses parts of the wrong size, a commit with parts missing, and bytes that do not hash as declared", async () => {
    const db = relay.db("refusals");
    const w = await open(relay, db, "w");
    await w.exec("INSERT INTO blob VALUES (1, x'01')");
    await w.sync();
    const s = await w.snapshot();
    const c = await client(relay, db, "w");
    const isCode = (code: string) => (e: unknown) => e instanceof RelayError && e.code === code;
    await assert.rejects(c.upload({ ...s, hash: "0".repeat(64) }), isCode("bad_request"));
    await assert.rejects(c.upload({ ...s, seq: s.seq + 5 }), isCode("bad_request"));
    await assert.rejects(c.upload({ ...s, version: 2 }), isCode("schema_mismatch"));
    await assert.rejects((await client(relay, db, "r", "read")).upload(s), isCode("forbidden"));
    assert.equal(await (await client(relay, db, "r", "read")).latest(), undefined, "nothing refused was published");
  });

  it("a hash another replica disagrees with flags the snapshot: never served, never trimmed behind; an agreed one is", async () => {
    const db = relay.db("agree");
    const w = await open(relay, db, "w");
    for (let i = 0; i < 5; i++) await w.exec("INSERT INTO blob VALUES (?, ?)", [i, new Uint8Array([i])]);
    await w.sync();
    const first = await w.snapshot();
    const up = await client(relay, db, "w");
    await up.upload(first);
    const admin = await client(relay, db, "ops", "admin");
    // A second subject agrees, a third reports another state at the same seq.
    await (await client(relay, db, "b", "read")).report(first.seq, first.hash);
    const [flagged] = await (await client(relay, db, "c", "read")).report(first.seq, "f".repeat(64));
    assert.deepEqual([flagged!.agreeing, flagged!.flagged], [2, true]);
    assert.equal(await admin.latest(), undefined);
    assert.deepEqual((await admin.compact()).trimmed, 0);
    let st = await admin.status();
    assert.deepEqual([st.trimmed, st.entries, st.snapshots.length, st.snapshots[0]!.flagged], [0, 5, 1, true]);

    // Control: a later snapshot two subjects agree on, and nobody disputes, is trimmed behind.
    await w.exec("INSERT INTO blob VALUES (9, x'09')");
    await w.sync();
    const second = await w.snapshot();
    await up.upload(second);
    assert.equal((await admin.status()).trimmed, 0, "one subject is not a quorum of 2");
    await (await client(relay, db, "b", "read")).report(second.seq, second.hash);
    assert.equal((await admin.compact()).trimmed, second.seq);
    st = await admin.status();
    assert.deepEqual([st.trimmed, st.entries, st.head, st.snapshots.map((x) => x.seq)], [second.seq, 0, second.seq, [second.seq]]);
  });

  it("a relay restart in the middle of an upload leaves no half snapshot in use", async () => {
    const db = durable.db("restart");
    const w = await open(durable, db, "w");
    await w.exec("INSERT INTO blob VALUES (1, randomblob(?))", [SNAPSHOT_PART_BYTES * 2]);
    await w.sync();
    const old = await w.snapshot();
    const c = await client(durable, db, "w");
    await c.upload(old);
    await w.exec("UPDATE blob SET data = randomblob(?)", [SNAPSHOT_PART_BYTES * 2]);
    await w.sync();
    const s = await w.snapshot();
    // By hand: begin, one part of three, then the relay goes down.
    const token = await durable.token("write", "w", db);
    const base = `${durable.url}/v1/db/${db}`;
    const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    const up = (await (await fetch(`${base}/snapshots`, { method: "POST", headers, body: JSON.stringify({ seq: s.seq, version: 1, size: s.bytes.byteLength, hash: s.hash }) })).json()) as { id: number; parts: number };
    assert.equal(up.parts, 3);
    const put = await fetch(`${base}/snapshots/${up.id}/parts/0`, { method: "PUT", headers: { authorization: `Bearer ${token}` }, body: s.bytes.subarray(0, SNAPSHOT_PART_BYTES) as Uint8Array<ArrayBuffer> });
    assert.equal(put.status, 200);
    await durable.stop();
    await durable.start();
    const again = await client(durable, db, "reader", "read");
    const latest = await again.latest();
    assert.equal(latest?.seq, old.seq, "the last committed snapshot is still the one served");
    assert.deepEqual(await again.download(latest!), old.bytes);
    const commit = await fetch(`${durable.url}/v1/db/${db}/snapshots/${up.id}/commit`, { method: "POST", headers: { authorization: `Bearer ${await durable.token("write", "w", db)}` } });
    assert.equal(commit.status, 400, "the interrupted upload cannot be committed with parts missing");
    assert.equal((await again.latest())?.seq, old.seq);
  });
});
