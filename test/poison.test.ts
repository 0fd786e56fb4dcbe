/**
 * Entries that cannot be applied.
 *
 * Poison: the relay checks a changeset's form and its tables' shapes, not its
 * values, so it accepts an INSERT of TEXT into an INTEGER PRIMARY KEY (a rowid alias), and
 * sqlite3changeset_apply then fails with SQLITE_MISMATCH on every replica.
 * Every replica must skip that entry whole, the same way, record it as a
 * `corrupt` conflict, and go on converging.
 *
 * Not poison: a schema mismatch (missing table, fewer columns, a different
 * primary key: with the schema in the log, a replica whose version differs
 * from the log's, schema_conflict) is the replica's problem, and a failure of the local database
 * (disk full) is the machine's. Both stop the sync with the database as it
 * was; neither may skip the entry, or that replica would diverge for good.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { openReplica, RelayError, type Replica } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { validateChangeset, type TableHeader } from "../protocol/changeset.ts";
import { encodeChangeset } from "../client/changeset-writer.ts";
import { dump, replica } from "./support/replicas.ts";
import { pullAll, push } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";

const relay = useRelay();

const isCode = (code: string) => (e: unknown) => e instanceof RelayError && e.code === code;

const ITEM = ["CREATE TABLE IF NOT EXISTS item(id INTEGER PRIMARY KEY, v TEXT)"];
const item: TableHeader = { name: "item", pk: [true, false] };
const insert = (id: unknown, v: string) => ({ table: item, op: "insert" as const, indirect: false, old: undefined, new: [id as number, v] });

/** One entry, two inserts: a fine row, then TEXT into the rowid alias. SQLite can apply neither, as a unit. */
function poisonChangeset(): Uint8Array {
  const cs = encodeChangeset({ tables: [item], changes: [insert(100, "would be fine alone"), insert("not-an-integer", "poison")] });
  validateChangeset(cs);
  // The oracle: SQLite itself refuses to apply it, and leaves nothing behind.
  const db = new DatabaseSync(":memory:");
  db.exec(ITEM[0]!);
  assert.throws(() => db.applyChangeset(cs), /datatype mismatch/);
  assert.deepEqual({ ...db.prepare("SELECT count(*) AS n FROM item").get() }, { n: 0 });
  db.close();
  return cs;
}

async function closeAll(...rs: Replica[]) {
  await Promise.all(rs.map((r) => r.close()));
}

describe("poison entries", () => {
  it("the relay accepts an entry SQLite cannot apply: every replica skips it whole, records it as corrupt, and keeps converging", async () => {
    const db = relay.db("poison");
    const kinds: DriverKind[] = ["node", "wasm", "node"];
    const rs = await Promise.all(kinds.map((k, i) => replica(relay, db, `r${i}`, k, { schema: ITEM, ...(k === "node" ? { path: join(relay.dir, `${db}-${i}.db`) } : {}) })));
    const [a, b, c] = rs as [Replica, Replica, Replica];
    await a.exec("INSERT INTO item VALUES (1, 'before')");
    await a.sync();

    const admin = await relay.token("admin", "ops");
    const pushed = await push(relay.url, db, admin, "mallory", [{ cseq: 1, changeset: poisonChangeset(), v: 1 }]);
    assert.equal(pushed.status, 200, JSON.stringify(pushed.body));
    const poisonSeq = pushed.body.acks[0].seq as number;

    // b has a pending write when the poison arrives (the rebase path); c
    // meets it in the same page as a later entry.
    await b.exec("INSERT INTO item VALUES (2, 'pending on b')");
    await a.exec("INSERT INTO item VALUES (3, 'after the poison')");
    await a.sync();
    for (let pass = 0; pass < 2; pass++) for (const r of rs) await r.sync();

    const fresh = await openReplica({ url: relay.url, db, token: await relay.token("read", "fresh", db), schema: ITEM, driver: "wasm" });
    await fresh.sync();
    const expected = await dump(fresh);
    assert.deepEqual(JSON.parse(expected).item.map((row: { id: number }) => row.id), [1, 2, 3], "nothing of the poison entry, everything after it");
    const head = (await pullAll(relay.url, db, admin)).length;
    for (const r of [...rs, fresh]) {
      assert.equal(await dump(r), expected);
      assert.equal(r.status().cursor, head);
      assert.equal(r.status().pending, 0);
      const corrupt = (await r.conflicts()).filter((x) => x.kind === "corrupt");
      assert.deepEqual(
        corrupt.map((x) => ({ seq: x.seq, client: x.client, cseq: x.cseq, resolution: x.resolution })),
        [{ seq: poisonSeq, client: "mallory", cseq: 1, resolution: "omit" }],
        `${r.clientId} records the skipped entry once`,
      );
    }
    const events: string[] = [];
    const late = await openReplica({ url: relay.url, db, token: await relay.token("read", "late", db), schema: ITEM, driver: "node" });
    late.on("conflict", (x) => events.push(`${x.kind}@${x.seq}`));
    await late.sync();
    assert.deepEqual(events, [`corrupt@${poisonSeq}`], "the skip is emitted as a conflict event too");
    await closeAll(...rs, fresh, late);
  });
});

describe("not poison: the sync stops and the database is untouched", () => {
  /**
   * W writes with `theirs`; B, with `ours` and a pending write, must stop.
   * Both are version 1 of their apps, so the relay refuses B's (whose push
   * comes first) with schema_conflict; a replica with nothing to push meets
   * the log's version in the pull, with the same code (schema.test.ts).
   */
  async function mismatch(name: string, theirs: string[], ours: string[], write: string, driver: DriverKind) {
    const db = relay.db(name);
    const W = await replica(relay, db, "w", "node", { schema: theirs });
    const B = await replica(relay, db, "b", driver, { schema: ours });
    await W.exec("INSERT INTO ok VALUES (1)"); // a fine entry first, in the same page
    await W.exec(write);
    await W.sync();
    await B.exec("INSERT INTO ok VALUES (2)");
    const before = await dump(B);
    const conflictsBefore = await B.conflicts();
    await assert.rejects(B.sync(), isCode("schema_conflict"));
    assert.equal(await dump(B), before, "the local database is untouched");
    assert.equal(B.status().cursor, 0, "not even the fine entry before it is applied: one step, one transaction");
    assert.equal(B.status().pending, 1);
    assert.deepEqual(await B.conflicts(), conflictsBefore, "nothing recorded: it is not a skip");
    await assert.rejects(B.sync(), isCode("schema_conflict"), "and it stays stopped, never skipping the entry");
    await closeAll(W, B);
  }
  const OK = "CREATE TABLE IF NOT EXISTS ok(id INTEGER PRIMARY KEY)";

  for (const driver of ["node", "wasm"] as DriverKind[]) {
    it(`the local table has fewer columns than the changeset (${driver})`, () =>
      mismatch("fewer", [OK, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, a TEXT, b TEXT)"], [OK, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, a TEXT)"], "INSERT INTO t VALUES (1, 'a', 'b')", driver));

    it(`the local primary key is another column (${driver})`, () =>
      mismatch("pkcol", [OK, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, a TEXT)"], [OK, "CREATE TABLE IF NOT EXISTS t(id INTEGER, a TEXT PRIMARY KEY)"], "INSERT INTO t VALUES (1, 'a')", driver));

    it(`the local primary key has the same columns in another order (${driver})`, () =>
      mismatch("pkorder", [OK, "CREATE TABLE IF NOT EXISTS t(a TEXT, b TEXT, v, PRIMARY KEY(a, b))"], [OK, "CREATE TABLE IF NOT EXISTS t(a TEXT, b TEXT, v, PRIMARY KEY(b, a))"], "INSERT INTO t VALUES ('a', 'b', 1)", driver));
  }

  for (const driver of ["node", "wasm"] as DriverKind[]) {
    it(`the local database cannot take the entry (disk full, ${driver}): the sync fails, nothing is skipped, and a later sync applies it`, async () => {
      const db = relay.db("full");
      const W = await replica(relay, db, "w", "node", { schema: ITEM });
      // Small entries first (one page holds them all, so they may be applied as a group), then a big one.
      for (let i = 0; i < 5; i++) await W.exec("INSERT INTO item VALUES (?, 'small')", [1000 + i]);
      await W.transaction(async (tx) => {
        for (let i = 0; i < 500; i++) await tx.exec("INSERT INTO item VALUES (?, ?)", [i, "x".repeat(200)]);
      });
      await W.sync();
      const B = await replica(relay, db, "b", driver, { schema: ITEM, ...(driver === "node" ? { path: join(relay.dir, `${db}-b.db`) } : {}) });
      await B.exec("INSERT INTO item VALUES (5000, 'pending on b')"); // undone and redone by the step
      // A cap on the database's size: SQLite reports SQLITE_FULL, as on a full disk.
      const [{ page_count }] = (await B.query("PRAGMA page_count")) as [{ page_count: number }];
      await B.exec(`PRAGMA max_page_count = ${page_count + 4}`);
      const before = await dump(B);
      await assert.rejects(B.sync(), (e: unknown) => isCode("apply_failed")(e) && /full/.test((e as Error).message));
      assert.equal(B.status().cursor, 0, "no entry is skipped, none of the step is kept");
      assert.equal(await dump(B), before);
      assert.equal(B.status().pending, 1);
      assert.deepEqual(await B.conflicts(), []);
      await B.exec("PRAGMA max_page_count = 1000000"); // disk space freed
      await B.sync();
      await W.sync();
      assert.equal(await dump(B), await dump(W));
      assert.equal(B.status().cursor, 8, "the schema entry, 6 of W's entries and B's own");
      assert.equal(B.status().pending, 0);
      await closeAll(W, B);
    });
  }
});
