/**
 * Automatic snapshots (issue 15): after SNAPSHOT_EVERY entries the relay asks
 * connected, caught-up replicas for one; one uploads, the others report their
 * hash; a replica whose state differs from it is told (divergence).
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { openReplica, type DivergenceEvent, type Replica } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { snapshotClient } from "../client/transport/snapshots.ts";
import { useRelay } from "./support/fixture.ts";
import { until } from "./support/wait.ts";

const relay = useRelay({ bindings: { SNAPSHOT_EVERY: "5" } });
const SCHEMA = ["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)"];
const opened: Replica[] = [];
after(() => Promise.all(opened.map((r) => r.close())));

async function open(db: string, client: string, driver: DriverKind, role: "read" | "write", opts: { path?: string; live?: boolean } = {}): Promise<Replica> {
  const live = opts.live ?? true;
  const r = await openReplica({ url: relay.url, db, token: await relay.token(role, client, db), clientId: client, driver, schema: SCHEMA, live, backoff: { baseMs: 1, capMs: 5 }, ...(opts.path ? { path: opts.path } : {}) });
  opened.push(r);
  if (live) await until(() => r.status().connected, `${client} connected`);
  return r;
}

describe("automatic snapshots", () => {
  it("every SNAPSHOT_EVERY entries one replica uploads, the others agree; a replica whose state differs is told", async () => {
    const db = relay.db("auto");
    // The writer pushes over HTTP, five entries at once (a replica with pending writes would not answer).
    const w = await open(db, "w", "node", "write", { live: false });
    await w.sync(); // the schema entry
    await open(db, "a", "wasm", "write"); // the one subscriber that may upload (SNAPSHOT_ROLE write)
    await open(db, "b", "wasm", "read");
    const file = join(relay.dir, `${db}-d.db`);
    const d = await open(db, "d", "node", "read", { path: file });
    const divergences: DivergenceEvent[] = [];
    d.on("divergence", (e) => divergences.push(e));
    const admin = snapshotClient({ url: relay.url, db, token: await relay.token("admin", "ops", db) });

    for (let i = 0; i < 5; i++) await w.exec("INSERT INTO todo VALUES (?, ?)", [`t${i}`, `title ${i}`]);
    await w.sync();
    const first = 6;
    await until(async () => (await admin.status()).snapshots.some((s) => s.seq === first && s.agreeing === 3), "a snapshot at seq 6 that all three subjects agree on");
    assert.equal(d.status().divergence, null);

    // Behind the replica's back: its confirmed state is no longer the log's.
    const raw = new DatabaseSync(file);
    raw.exec("UPDATE todo SET title = 'tampered' WHERE id = 't0'");
    raw.close();
    for (let i = 5; i < 10; i++) await w.exec("INSERT INTO todo VALUES (?, ?)", [`t${i}`, `title ${i}`]);
    await w.sync();
    const second = 11;
    await until(() => divergences.length > 0, "the tampered replica hears of it");
    assert.equal(divergences[0]!.seq, second);
    assert.deepEqual(d.status().divergence, divergences[0]);
    const st = await admin.status();
    const s = st.snapshots.find((x) => x.seq === second)!;
    assert.deepEqual([s.flagged, s.agreeing, s.hash], [true, 2, divergences[0]!.snapshot]);
    assert.equal((await admin.latest())?.seq, first, "a disputed snapshot is not served");

    // Repair: onto the newest undisputed snapshot, then the log after it.
    const ref = await open(db, "ref", "wasm", "read", { live: false });
    await ref.sync();
    await d.resetToSnapshot();
    assert.equal(d.status().divergence, null);
    assert.equal((await d.snapshot()).hash, (await ref.snapshot()).hash);
    assert.deepEqual(await d.query("SELECT title FROM todo WHERE id = 't0'"), [{ title: "title 0" }]);
  });
});
