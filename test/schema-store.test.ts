/**
 * The schema rules on their own: statements (protocol/schema.ts) and the
 * relay's versions, shapes and entry checks (worker/schema-store.ts through
 * log-store.push), over node:sqlite standing in for the Durable Object's SQL
 * (test/support/do-sql.ts). test/schema.test.ts checks them through workerd.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as store from "../worker/log-store.ts";
import * as schemaStore from "../worker/schema-store.ts";
import { capturedColumns, readStatement } from "../protocol/schema.ts";
import { isRelayError } from "../protocol/errors.ts";
import { doSql } from "./support/do-sql.ts";
import { checkPushTables } from "../worker/push-check.ts";
import { changesetTables } from "../protocol/changeset.ts";
import { captured } from "./support/captured.ts";

function fresh() {
  const sql = doSql();
  store.migrate(sql);
  return sql;
}
const code = (c: Parameters<typeof isRelayError>[1]) => (e: unknown) => isRelayError(e, c);
const TODO = "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, g TEXT GENERATED ALWAYS AS (upper(title)) VIRTUAL)";
const row = captured(TODO, "INSERT INTO todo(id, title) VALUES ('1', 'a')");

describe("statements", () => {
  it("reads what schema statements do, through quotes, comments and qualified names", () => {
    assert.deepEqual(readStatement(`/* c */ ALTER TABLE "To""do" RENAME COLUMN [a b] TO \`c\` -- done`), { op: "alter", name: 'To"do', renameColumn: { from: "a b", to: "c" } });
    assert.deepEqual(readStatement("alter table main.t rename to u;"), { op: "alter", name: "t", renameTo: "u" });
    assert.deepEqual(readStatement("ALTER TABLE t DROP COLUMN x"), { op: "alter", name: "t", dropColumn: "x" });
    assert.deepEqual(readStatement("ALTER TABLE t ADD x INTEGER DEFAULT 0"), { op: "alter", name: "t", addColumn: "x" });
    assert.deepEqual(readStatement("CREATE UNIQUE INDEX IF NOT EXISTS i ON t(x)"), { op: "create", type: "index", name: "i", table: "t" });
    assert.deepEqual(readStatement("DROP TABLE IF EXISTS t"), { op: "drop", type: "table", name: "t" });
    assert.deepEqual(readStatement("CREATE VIRTUAL TABLE f USING fts5(body)"), { op: "create", type: "virtual", name: "f" });
  });

  it("a trigger's body may hold semicolons; anything after its END may not", () => {
    const trigger = "CREATE TRIGGER t AFTER INSERT ON todo BEGIN UPDATE todo SET title = CASE WHEN 1 THEN 'x' END; DELETE FROM todo WHERE 0; END";
    assert.deepEqual(readStatement(trigger), { op: "create", type: "trigger", name: "t", table: "todo" });
    assert.throws(() => readStatement(`${trigger}; DELETE FROM relay_log`), /one statement per string/);
    assert.throws(() => readStatement("CREATE TABLE t(x PRIMARY KEY); DELETE FROM relay_log"), /one statement per string/);
    assert.throws(() => readStatement("CREATE TABLE t(x PRIMARY KEY, y DEFAULT ';'); DROP TABLE t"), /one statement per string/);
    assert.deepEqual(readStatement("CREATE TABLE t(x PRIMARY KEY, y DEFAULT ';')"), { op: "create", type: "table", name: "t" });
  });

  it("refuses data, TEMP, other schemas, AS SELECT and reserved names however they are quoted", () => {
    for (const bad of ["INSERT INTO t VALUES (1)", "PRAGMA x", "CREATE TEMP TABLE t(x)", "CREATE TABLE temp.t(x PRIMARY KEY)", "CREATE TABLE t AS SELECT 1",
      'CREATE TABLE "relay_x"(a PRIMARY KEY)', "CREATE TABLE [_RELAY_x](a PRIMARY KEY)", "ALTER TABLE t RENAME TO _cf_x", "CREATE INDEX i ON relay_log(seq)", "", "  -- nothing"]) {
      assert.throws(() => readStatement(bad), code("schema_refused"), bad);
    }
  });
});

describe("schema-store: versions and shapes", () => {
  it("runs a version's DDL, records every table's shape at that version, and serves it as a schema entry in the log", () => {
    const sql = fresh();
    const res = store.push(sql, "a", [], 5, undefined, { schema: [{ version: 1, statements: [TODO, "CREATE VIRTUAL TABLE f USING fts5(body)", "CREATE TABLE nopk(a, b)"] }] });
    assert.deepEqual(res, {
      acks: [],
      head: 1,
      appended: [{ seq: 1, client: "a", cseq: 0, changeset: new Uint8Array(0), ts: 5, v: 1, schema: [TODO, "CREATE VIRTUAL TABLE f USING fts5(body)", "CREATE TABLE nopk(a, b)"] }],
      schema: [{ version: 1, seq: 1 }],
    });
    assert.equal(schemaStore.logVersion(sql), 1);
    const shapes = new Map(schemaStore.shapesAt(sql, 1).map((t) => [t.name, t]));
    assert.deepEqual(capturedColumns(shapes.get("todo")!).map((c) => c.name), ["id", "title"], "generated columns are not in changesets");
    assert.equal(shapes.get("todo")!.local, false);
    for (const local of ["f", "f_data", "f_config", "nopk"]) assert.equal(shapes.get(local)?.local, true, local);
    store.push(sql, "a", [], 6, undefined, { schema: [{ version: 2, statements: ["ALTER TABLE todo ADD COLUMN done INTEGER DEFAULT 0"] }] });
    assert.equal(schemaStore.shapesAt(sql, 1).find((t) => t.name === "todo")!.columns.length, 3, "version 1's shapes stay as they were");
    assert.equal(schemaStore.shapesAt(sql, 2).find((t) => t.name === "todo")!.columns.length, 4);
    assert.deepEqual(store.pull(sql, 0, 10).entries.map((e) => [e.seq, e.v, e.schema?.length]), [[1, 1, 3], [2, 2, 1]]);
  });

  it("the same statements again are nothing to do; others under a version the log has are schema_conflict", () => {
    const sql = fresh();
    store.push(sql, "a", [], 1, undefined, { schema: [{ version: 1, statements: [TODO] }] });
    assert.deepEqual(store.push(sql, "b", [], 2, undefined, { schema: [{ version: 1, statements: [TODO] }] }).appended, []);
    assert.throws(() => store.push(sql, "b", [], 2, undefined, { schema: [{ version: 1, statements: [`${TODO} `] }] }), code("schema_conflict"));
    assert.throws(() => store.push(sql, "b", [], 2, undefined, { schema: [{ version: 3, statements: [] }] }), code("bad_request"));
    assert.throws(() => store.push(sql, "b", [], 2, undefined, { schema: [{ version: 2, statements: [] }], mayChangeSchema: false }), code("forbidden"));
  });

  it("a push refused after its schema versions leaves neither the versions nor their DDL (inside transactionSync)", () => {
    const sql = fresh();
    const bad = captured("CREATE TABLE other(id INTEGER PRIMARY KEY)", "INSERT INTO other VALUES (1)");
    assert.throws(() => sql.transactionSync(() => store.push(sql, "a", [{ cseq: 1, changeset: bad, v: 1 }], 1, undefined, { schema: [{ version: 1, statements: [TODO] }] })), code("schema_mismatch"));
    assert.equal(schemaStore.logVersion(sql), 0);
    assert.equal(store.head(sql), 0);
    assert.deepEqual(sql.exec("SELECT name FROM sqlite_schema WHERE name = 'todo'").toArray(), []);
  });
});

describe("schema-store: data entries", () => {
  const at1 = () => {
    const sql = fresh();
    store.push(sql, "a", [], 1, undefined, { schema: [{ version: 1, statements: [TODO, "CREATE TABLE nopk(a, b)"] }] });
    return sql;
  };

  it("an entry captured under the log's version and fitting its tables is stored with its version", () => {
    const sql = at1();
    assert.deepEqual(store.push(sql, "a", [{ cseq: 1, changeset: row, v: 1 }], 2).acks, [{ cseq: 1, seq: 2 }]);
    assert.equal(store.pull(sql, 1, 10).entries[0]!.v, 1);
  });

  it("refuses an older version (schema_outdated), an unknown one and every shape that does not fit (schema_mismatch)", () => {
    const sql = at1();
    const cases: [Uint8Array, number, string][] = [
      [row, 0, "schema_outdated"],
      [row, 2, "schema_mismatch"],
      [captured("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, extra)", "INSERT INTO todo VALUES ('1', 'a', 1)"), 1, "schema_mismatch"],
      [captured("CREATE TABLE todo(id TEXT, title TEXT PRIMARY KEY)", "INSERT INTO todo VALUES ('1', 'a')"), 1, "schema_mismatch"],
      [captured("CREATE TABLE todo(id TEXT, title TEXT, PRIMARY KEY(id, title))", "INSERT INTO todo VALUES ('1', 'a')"), 1, "schema_mismatch"],
      [captured("CREATE TABLE nopk(a PRIMARY KEY, b)", "INSERT INTO nopk VALUES (1, 2)"), 1, "schema_mismatch"],
      [captured("CREATE TABLE TODO2(id PRIMARY KEY)", "INSERT INTO TODO2 VALUES (1)"), 1, "schema_mismatch"],
    ];
    for (const [changeset, v, c] of cases) assert.throws(() => store.push(sql, "a", [{ cseq: 1, changeset, v }], 2), code(c as "schema_mismatch"));
    assert.equal(store.head(sql), 1);
  });

  it("checks the table headers the Worker's validation read (no second scan), and refuses a push whose bytes do not fit", () => {
    const sql = at1();
    const other = captured("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, extra)", "INSERT INTO todo VALUES ('1', 'a', 1)");
    const [rowTables, otherTables] = checkPushTables({ role: "write" }, { entries: [{ cseq: 1, changeset: row }, { cseq: 2, changeset: other }] });
    assert.deepEqual(rowTables, changesetTables(row));
    // The headers are what is checked: these name a shape the log does not have.
    assert.throws(() => store.push(sql, "a", [{ cseq: 1, changeset: row, v: 1 }], 2, undefined, { tables: [otherTables!] }), code("schema_mismatch"));
    // Headers read from the bytes: the bytes that do not fit are refused, those that do are taken.
    assert.throws(() => store.push(sql, "a", [{ cseq: 1, changeset: other, v: 1 }], 2, undefined, { tables: [otherTables!] }), code("schema_mismatch"));
    assert.deepEqual(store.push(sql, "a", [{ cseq: 1, changeset: row, v: 1 }], 2, undefined, { tables: [rowTables!] }).acks, [{ cseq: 1, seq: 2 }]);
    // The validation is the same as checkPush's: a broken changeset names its entry.
    assert.throws(() => checkPushTables({ role: "write" }, { entries: [{ cseq: 7, changeset: row.subarray(0, row.byteLength - 1) }] }), (e: unknown) => isRelayError(e, "malformed_changeset") && /cseq 7/.test((e as Error).message));
  });

  it("table names match case-insensitively, as in SQLite", () => {
    const sql = at1();
    const upper = captured("CREATE TABLE TODO(id TEXT PRIMARY KEY, title TEXT)", "INSERT INTO TODO VALUES ('1', 'a')");
    assert.deepEqual(store.push(sql, "a", [{ cseq: 1, changeset: upper, v: 1 }], 2).acks, [{ cseq: 1, seq: 2 }]);
  });

  it("a retry of a stored entry gets its seq even once the log has a newer version", () => {
    const sql = at1();
    store.push(sql, "a", [{ cseq: 1, changeset: row, v: 1 }], 2);
    store.push(sql, "b", [], 3, undefined, { schema: [{ version: 2, statements: ["ALTER TABLE todo ADD COLUMN done"] }] });
    assert.deepEqual(store.push(sql, "a", [{ cseq: 1, changeset: row, v: 1 }], 4).acks, [{ cseq: 1, seq: 2 }]);
    assert.throws(() => store.push(sql, "a", [{ cseq: 2, changeset: row, v: 1 }], 4), code("schema_outdated"));
  });

  it("a log without schema entries checks form only (entries of version 0)", () => {
    const sql = fresh();
    const any = captured("CREATE TABLE whatever(id PRIMARY KEY)", "INSERT INTO whatever VALUES (1)");
    assert.deepEqual(store.push(sql, "a", [{ cseq: 1, changeset: any }], 1).acks, [{ cseq: 1, seq: 1 }]);
    assert.throws(() => store.push(sql, "a", [{ cseq: 2, changeset: any, v: 1 }], 1), code("schema_mismatch"));
  });
});
