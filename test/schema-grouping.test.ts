/**
 * Grouped applies never mix shapes (issue 13). Entries are applied as one
 * concatenated changeset when none conflicts (client/apply.ts); SQLite
 * 3.53.4 (node:sqlite) applies a narrower block of a table after a wider one
 * with the wider block's prepared INSERT, so the missing column takes the
 * previous row's value: an old app's todo(id, title) row got a new app's
 * `done` value on node replicas only. Both drivers, so the test shows the
 * difference it guards against.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { applyAllClean, SchemaCache } from "../client/apply.ts";
import { openDriver } from "../client/drivers/index.ts";
import { captured } from "./support/captured.ts";


const wide = captured("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0)", "INSERT INTO todo VALUES ('new', 'from the new app', 1)");
const narrow = captured("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)", "INSERT INTO todo VALUES ('old', 'from the old app')");

for (const kind of ["node", "wasm"] as const) {
  describe(`grouped apply (${kind})`, () => {
    it("a narrower block of a table after a wider one is not applied in the same group", async () => {
      const d = await openDriver(kind, ":memory:");
      d.exec("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER DEFAULT 0)");
      d.exec("BEGIN");
      const grouped = applyAllClean(d, [wide, narrow], new SchemaCache(d));
      if (!grouped) for (const c of [wide, narrow]) d.applyChangeset(c, () => 0);
      d.exec("COMMIT");
      const rows = d.all("SELECT id, title, done FROM todo ORDER BY id").map((r) => ({ ...r }));
      d.close();
      assert.deepEqual(rows, [
        { id: "new", title: "from the new app", done: 1 },
        { id: "old", title: "from the old app", done: 0 },
      ]);
    });
  });
}
