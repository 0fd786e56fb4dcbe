/**
 * A rowid table whose primary key is not the rowid alias takes NULL keys, and
 * the session extension silently skips such rows: the write committed locally
 * and never replicated. It is refused when written instead (invariant 8).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { RelayError } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { dump, replica } from "./support/replicas.ts";
import { useRelay } from "./support/fixture.ts";

const relay = useRelay();

const V1 = [
  "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT)",
  "CREATE TABLE pair(a TEXT, b TEXT NOT NULL, v TEXT, PRIMARY KEY (a, b))",
  "CREATE TABLE strict_key(id TEXT NOT NULL PRIMARY KEY, v TEXT)",
  "CREATE TABLE counter(id INTEGER PRIMARY KEY, v TEXT)",
  "CREATE TABLE wr(a TEXT, b TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID",
];
const V2 = ["CREATE TABLE later(k TEXT PRIMARY KEY, v TEXT)"];

async function refused(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof RelayError && e.code === "null_primary_key" && /never replicate/.test(e.message));
}

for (const driver of ["node", "wasm"] as const satisfies readonly DriverKind[]) {
  describe(`NULL primary keys (${driver})`, () => {
    it("are refused at write time, with nothing queued; other keys and other tables write as before", async () => {
      const db = relay.db("null-keys");
      const a = await replica(relay, db, `a-${driver}`, driver, { migrations: [V1] });
      await refused(a.exec("INSERT INTO item(id, v) VALUES (NULL, 'lost')"));
      await refused(a.exec("INSERT INTO item(v) VALUES ('no key given')"));
      await refused(a.exec("INSERT INTO pair(a, b, v) VALUES (NULL, 'x', 'lost')"));
      await a.exec("INSERT INTO item(id, v) VALUES ('k', 'kept')");
      await refused(a.exec("UPDATE item SET id = NULL WHERE id = 'k'"));
      await a.exec("INSERT INTO pair(a, b, v) VALUES ('p', 'q', 'kept')");
      await a.exec("INSERT INTO counter(v) VALUES ('rowid alias: SQLite assigns the key')");
      await a.exec("INSERT INTO strict_key(id, v) VALUES ('s', 'kept')");
      assert.equal((await a.query("SELECT * FROM item WHERE id IS NULL")).length, 0);
      assert.equal(a.status().pending, 4);
      // Everything that committed reaches another replica, byte for byte.
      await a.sync();
      const b = await replica(relay, db, `b-${driver}`, driver, { migrations: [V1] });
      await b.sync();
      assert.equal(await dump(b), await dump(a));
    });

    it("are refused on a table a later schema version adds, after the replica takes it from the log", async () => {
      const db = relay.db("null-keys");
      const newer = await replica(relay, db, `n-${driver}`, driver, { migrations: [V1, V2] });
      await newer.sync();
      const older = await replica(relay, db, `o-${driver}`, driver, { migrations: [V1] });
      await older.sync();
      assert.equal(older.status().schemaVersion, 2);
      await refused(older.exec("INSERT INTO later(k, v) VALUES (NULL, 'lost')"));
      await refused(newer.exec("INSERT INTO later(k, v) VALUES (NULL, 'lost')"));
    });
  });
}
