/**
 * Bootstrap from a snapshot, compaction, and the reset of a replica left
 * behind by it (issue 15): a fresh replica downloads the newest snapshot and
 * the log after it; one whose cursor is older than the retained log gets
 * `snapshot_required`, resets onto the snapshot and keeps its pending writes
 * and its conflict log.
 */
import { join } from "node:path";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { httpTransport, openReplica, RelayError, type Replica, type ReplicaOptions, type SyncProgress, type Transport } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { snapshotClient } from "../client/transport/snapshots.ts";
import { useRelay, type RelayFixture } from "./support/fixture.ts";
import { dump } from "./support/replicas.ts";

const keeping = useRelay({ bindings: {} });
const trimming = useRelay({ bindings: { RETAIN_ENTRIES: "0", RETAIN_SECONDS: "0" } });

const V1 = ["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, n INTEGER)"];
const V2 = ["ALTER TABLE todo ADD COLUMN done INTEGER NOT NULL DEFAULT 0", "CREATE TABLE tag(id TEXT PRIMARY KEY, name TEXT)"];

const opened: Replica[] = [];
after(() => Promise.all(opened.map((r) => r.close())));
async function open(relay: RelayFixture, db: string, client: string, driver: DriverKind, migrations: string[][] = [V1, V2], opts: Partial<ReplicaOptions> = {}): Promise<Replica> {
  const r = await openReplica({ url: relay.url, db, token: await relay.token("write", client, db), clientId: client, driver, migrations, backoff: { baseMs: 1, capMs: 5 }, ...opts });
  opened.push(r);
  return r;
}
const uploader = async (relay: RelayFixture, db: string, sub: string) => snapshotClient({ url: relay.url, db, token: await relay.token("write", sub, db) });

async function writes(r: Replica, from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i++) {
    await r.exec("INSERT INTO todo(id, title, n) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = todo.n + 1, title = excluded.title", [`t${i % 10}`, `title ${i}`, i]);
    if (i % 7 === 0) await r.exec("INSERT OR REPLACE INTO tag VALUES (?, ?)", [`g${i % 3}`, `tag ${i}`]);
  }
  await r.sync();
}

describe("bootstrap from a snapshot", () => {
  it("a fresh replica takes the snapshot and the log after it, and equals one that replayed every entry", async () => {
    const db = keeping.db("boot");
    const writer = await open(keeping, db, "writer", "node");
    const replay = await open(keeping, db, "replay", "wasm");
    await writes(writer, 0, 30);
    await replay.sync(); // from now on it only ever replays entries
    const snap = await writer.snapshot();
    await (await uploader(keeping, db, "writer")).upload(snap);
    await writes(writer, 30, 12);
    const head = writer.status().cursor;

    for (const driver of ["node", "wasm"] as const) {
      const fresh = await open(keeping, db, `fresh-${driver}`, driver, [V1]); // an older app: the log's v2 comes with the snapshot
      const progress: SyncProgress[] = [];
      fresh.on("progress", (p) => progress.push(p));
      const ev = await fresh.sync();
      assert.equal(ev.cursor, head);
      assert.equal(ev.pulled, head - snap.seq, "only the tail after the snapshot is pulled");
      assert.ok(progress.some((p) => p.bytesExpected === snap.bytes.byteLength && p.bytes === snap.bytes.byteLength), "the download reports its progress");
      await replay.sync();
      assert.equal(await dump(fresh), await dump(replay));
      assert.equal((await fresh.snapshot()).hash, (await replay.snapshot()).hash);
      assert.equal(fresh.status().schemaVersion, 2);
    }
  });
});

describe("compaction", () => {
  it("trims the log behind an agreed snapshot; a replica offline across it resets, keeps its pending writes and conflict log, and its writes land", async () => {
    const db = trimming.db("offline");
    const writer = await open(trimming, db, "writer", "node");
    const offline = await open(trimming, db, "offline", "wasm");
    await writes(writer, 0, 10);
    await offline.sync();
    // A conflict on record: both insert the same key, the writer's lands later.
    await offline.exec("INSERT INTO tag VALUES ('same', 'offline first')");
    await offline.sync();
    await writer.exec("INSERT INTO tag VALUES ('same', 'writer later')");
    await writer.sync();
    await offline.sync();
    const conflicts = await offline.conflicts();
    assert.equal(conflicts.length, 1);

    // Offline now, with pending writes: a new row and an edit of a shared one.
    await offline.exec("INSERT INTO todo(id, title, n) VALUES ('mine', 'offline write', 1)");
    await offline.exec("UPDATE todo SET title = 'edited offline' WHERE id = 't3'");
    const behind = offline.status().cursor;

    await writes(writer, 10, 20);
    const snap = await writer.snapshot();
    const admin = snapshotClient({ url: trimming.url, db, token: await trimming.token("admin", "ops", db) });
    await (await uploader(trimming, db, "writer")).upload(snap);
    const st = await admin.status();
    assert.equal(st.trimmed, snap.seq, "RETAIN_ENTRIES=0: trimmed at once behind the snapshot");
    assert.equal(st.entries, 0);
    assert.ok(behind < st.trimmed);

    const ev = await offline.sync();
    assert.equal(ev.cursor, ev.head);
    assert.equal(offline.status().pending, 0, "its writes were pushed after the reset");
    await writer.sync();
    assert.equal(await dump(offline), await dump(writer));
    const rows = await writer.query("SELECT id, title FROM todo WHERE id IN ('mine', 't3') ORDER BY id");
    assert.deepEqual(rows, [{ id: "mine", title: "offline write" }, { id: "t3", title: "edited offline" }]);
    assert.deepEqual((await offline.conflicts()).slice(0, 1), conflicts, "the conflict log stays (its edit of t3 then met the writer's: one more)");
  });

  it("a push whose ack was lost, retried after its entry was compacted, resets instead of failing or landing twice", async () => {
    const db = trimming.db("lost-ack");
    const writer = await open(trimming, db, "writer", "node");
    await writes(writer, 0, 3);
    let lose = false;
    const http = httpTransport({ url: trimming.url, db, token: await trimming.token("write", "unlucky", db) });
    const transport: Transport = {
      pull: http.pull,
      async push(client, entries, signal, schema) {
        const res = await http.push(client, entries, signal, schema);
        if (lose) throw new RelayError("network", "connection lost while reading the response");
        return res;
      },
    };
    const unlucky = await open(trimming, db, "unlucky", "wasm", [V1, V2], { transport, backoff: { baseMs: 1, capMs: 2, maxAttempts: 1 } });
    await unlucky.sync();
    await unlucky.exec("UPDATE todo SET n = n + 100 WHERE id = 't1'");
    lose = true;
    await assert.rejects(unlucky.sync(), (e: RelayError) => e.code === "network");
    lose = false;
    await writer.sync();
    await (await uploader(trimming, db, "writer")).upload(await writer.snapshot());
    const ev = await unlucky.sync();
    assert.equal(ev.cursor, ev.head);
    assert.equal(unlucky.status().pending, 0);
    await writer.sync();
    assert.equal(await dump(unlucky), await dump(writer));
    assert.deepEqual(await writer.query("SELECT n FROM todo WHERE id = 't1'"), [{ n: 101 }], "applied once");
  });

  it("a reset onto a snapshot keeps a write the relay refused for good held (status().blocked) and the database's client id", async () => {
    const db = trimming.db("blocked-reset");
    const path = join(trimming.dir, "blocked-reset.db");
    const writer = await open(trimming, db, "writer", "node");
    const A = await open(trimming, db, "mine", "node", [V1, V2], { path, token: await trimming.token("write", "alice", db) });
    await A.exec("INSERT INTO todo(id, title, n) VALUES ('a1', 'bound', 1)");
    await A.sync(); // the client id is now alice's
    await A.close();
    // Bob's token on alice's database file: its next write is refused for good.
    const B = await open(trimming, db, "mine", "node", [V1, V2], { path, token: await trimming.token("write", "bob", db) });
    await B.exec("INSERT INTO todo(id, title, n) VALUES ('a2', 'held', 2)");
    await assert.rejects(B.sync(), (e: RelayError) => e.code === "forbidden");
    assert.equal(B.status().blocked?.cseq, 2);
    const behind = B.status().cursor;

    await writes(writer, 0, 10);
    await (await uploader(trimming, db, "writer")).upload(await writer.snapshot());
    const trimmed = (await snapshotClient({ url: trimming.url, db, token: await trimming.token("admin", "ops", db) }).status()).trimmed;
    assert.ok(behind < trimmed, "the log was trimmed past its cursor");

    await assert.rejects(B.sync(), (e: RelayError) => e.code === "forbidden");
    const st = B.status();
    assert.equal(st.cursor, st.head, "reset onto the snapshot and pulled the rest");
    assert.equal(st.clientId, "mine");
    assert.equal(st.blocked?.cseq, 2, "still held");
    assert.equal(st.pending, 1, "not dropped");
    assert.deepEqual(await B.query("SELECT title FROM todo WHERE id = 'a2'"), [{ title: "held" }], "and still applied locally");
    await writer.sync();
    assert.deepEqual(await writer.query("SELECT id FROM todo WHERE id IN ('a1', 'a2')"), [{ id: "a1" }]);
  });

  it("never trims what no snapshot covers", async () => {
    const db = trimming.db("uncovered");
    const writer = await open(trimming, db, "writer", "node");
    await writes(writer, 0, 5);
    const admin = snapshotClient({ url: trimming.url, db, token: await trimming.token("admin", "ops", db) });
    assert.equal((await admin.compact()).trimmed, 0);
    const st = await admin.status();
    assert.equal(st.entries, st.head - 2, "every data entry is still there (two schema entries besides)");
  });
});
