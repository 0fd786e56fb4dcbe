import { it } from "node:test";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openDriver } from "../client/drivers/index.ts";
import { SchemaState } from "../client/migrate.ts";
import { SchemaCache } from "../client/apply.ts";
import { rebase } from "../client/rebase.ts";
import * as store from "../client/store.ts";
import type { LogEntry } from "../protocol/messages.ts";

/**
 * Invariant 5: the confirmed state is the fold of the log entries one by one.
 * Replicas receive the log in different groupings (HTTP pages, live frames),
 * so applying [e1, e2] in one step must equal applying e1, then e2. SQLite
 * defers a constraint failure to the end of one apply call, so a changeset
 * made of both entries can succeed where e1 alone fails: this pins that down.
 */
const SCHEMA = "CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT UNIQUE)";

function entries(): LogEntry[] {
  // Captured without the UNIQUE index, as two writers that each saw a valid state.
  const src = new DatabaseSync(":memory:");
  src.exec("CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT); INSERT INTO u VALUES (1, 'a'), (2, 'x')");
  const capture = (sql: string) => {
    const s = src.createSession();
    src.exec(sql);
    const cs = s.changeset();
    s.close();
    return cs;
  };
  const e1 = capture("UPDATE u SET email = 'x' WHERE id = 1"); // collides with row 2 on a replica
  const e2 = capture("UPDATE u SET email = 'y' WHERE id = 2"); // would make room for it
  return [
    { seq: 1, client: "w1", cseq: 1, changeset: e1, ts: 0 },
    { seq: 2, client: "w2", cseq: 1, changeset: e2, ts: 0 },
  ];
}

async function replay(groups: LogEntry[][]) {
  const d = await openDriver("node", ":memory:");
  d.exec(SCHEMA);
  d.exec("INSERT INTO u VALUES (1, 'a'), (2, 'x')");
  store.migrate(d);
  const schema = new SchemaCache(d);
  const kinds: string[] = [];
  for (const g of groups) {
    d.exec("BEGIN");
    kinds.push(...rebase(d, "me", g, {}, schema, new SchemaState(d)).conflicts.map((c) => c.kind));
    d.exec("COMMIT");
  }
  const rows = d.all("SELECT id, email FROM u ORDER BY id").map((r) => ({ ...r }));
  d.close();
  return { rows, kinds };
}

it("applying two entries in one step equals applying them one at a time, even where SQLite would defer a constraint", async () => {
  const [e1, e2] = entries() as [LogEntry, LogEntry];
  const apart = await replay([[e1], [e2]]);
  const together = await replay([[e1, e2]]);
  assert.deepEqual(apart.rows, [{ id: 1, email: "a" }, { id: 2, email: "y" }], "e1 alone breaks UNIQUE and is omitted");
  assert.deepEqual(apart.kinds, ["constraint"]);
  assert.deepEqual(together, apart);
});
