/**
 * The changeset codec against real SQLite: node:sqlite produces changesets,
 * sqlite-wasm (3.54.1, the build the client ships) is the oracle for what
 * SQLite's parser accepts and for sqlite3changeset_invert's exact bytes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { DatabaseSync, constants } from "node:sqlite";
import fc from "fast-check";
import { changesetTables, decodeChangeset, primaryKey, validateChangeset, type Change, type Changeset, type SqlValue, type TableHeader } from "../protocol/changeset.ts";
import { encodeChangeset, invertChangeset } from "../client/changeset-writer.ts";
import { RelayError } from "../protocol/errors.ts";
import { capi, sqliteInvert, sqliteIterate } from "./support/sqlite-oracle.ts";

// ---------------------------------------------------------------- helpers

const isMalformed = (e: unknown): boolean => e instanceof RelayError && e.code === "malformed_changeset";

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(hex(actual), hex(expected), what);
}

const SCHEMA = `
  CREATE TABLE items(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, anything);
  CREATE TABLE pairs(a TEXT, b INTEGER, c BLOB, d, PRIMARY KEY(c, a));
  CREATE TABLE tail(note TEXT, k TEXT PRIMARY KEY) WITHOUT ROWID;
  ${Array.from({ length: 20 }, (_, i) => `CREATE TABLE m${i}(v, id INTEGER PRIMARY KEY);`).join("\n")}
`;

function tableNames(db: DatabaseSync): string[] {
  const rows = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as { name: string }[];
  return rows.map((r) => r.name);
}

/** Every row of every table, with quote() so that 1, 1.0, '1' and x'01' all differ. */
function snapshot(db: DatabaseSync): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const name of tableNames(db)) {
    const cols = (db.prepare(`SELECT name FROM pragma_table_info('${name}')`).all() as { name: string }[]).map((c) => c.name);
    const sql = `SELECT ${cols.map((c) => `quote("${c}")`).join(" || '|' || ")} AS row FROM "${name}" ORDER BY 1`;
    out[name] = (db.prepare(sql).all() as { row: string }[]).map((r) => r.row);
  }
  return out;
}

interface Fixture {
  name: string;
  changeset: Uint8Array;
  before: Record<string, string[]>;
  after: Record<string, string[]>;
}

const BIG_TEXT = "ü".repeat(5000); // 10 000 UTF-8 bytes: a 2-byte varint length
const BIG_BLOB = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31) & 0xff); // a 3-byte varint length

/** One database, one changeset per transaction, with the state before and after each. */
function buildFixtures(): Fixture[] {
  const db = new DatabaseSync(":memory:");
  db.exec(SCHEMA);
  const fixtures: Fixture[] = [];
  const capture = (name: string, write: () => void): void => {
    const before = snapshot(db);
    const session = db.createSession();
    db.exec("BEGIN");
    write();
    db.exec("COMMIT");
    const changeset = session.changeset();
    session.close();
    assert.ok(changeset.length > 0, `fixture ${name} captured nothing`);
    fixtures.push({ name, changeset, before, after: snapshot(db) });
  };
  const insItem = db.prepare("INSERT INTO items(id, i, r, t, b, anything) VALUES (?, ?, ?, ?, ?, ?)");
  const insPair = db.prepare("INSERT INTO pairs(a, b, c, d) VALUES (?, ?, ?, ?)");

  capture("inserts of every type", () => {
    insItem.run(1, 0, 1.5, "hello", new Uint8Array([0, 255, 1]), null);
    insItem.run(2, -1, 1.0, "héllo 🌍 日本", new Uint8Array(0), 2n ** 62n);
    insItem.run(3, 2 ** 53 - 1, -0.0, "", null, "text");
    insItem.run(4, 2n ** 53n + 1n, 1e300, null, new Uint8Array([7]), 3.25);
    insItem.run(5, -(2n ** 63n), -2.5e-300, "\ufeffx", null, new Uint8Array([1, 2]));
    insItem.run(6, 2n ** 63n - 1n, Infinity, "y", null, -Infinity);
    insItem.run(-7, -(2n ** 53n) - 5n, -Infinity, "neg id", null, null);
    insPair.run("a", 1, new Uint8Array([1]), "d1");
    insPair.run("b", 2, new Uint8Array([1]), null);
    db.exec("INSERT INTO tail VALUES ('first', 'k1'), (NULL, 'k2'), ('ünïcödé', 'ключ')");
  });
  capture("updates", () => {
    db.exec("UPDATE items SET t = 'changed', r = 2.0 WHERE id = 1");
    db.exec("UPDATE items SET b = NULL, anything = x'beef' WHERE id = 2");
    db.exec("UPDATE items SET i = i + 1 WHERE id IN (3, 5)");
    db.exec("UPDATE pairs SET b = 20, d = 'dd' WHERE a = 'b'");
    db.exec("UPDATE tail SET note = 'second' WHERE k = 'k1'");
  });
  capture("deletes", () => {
    db.exec("DELETE FROM items WHERE id IN (4, 6)");
    db.exec("DELETE FROM pairs WHERE a = 'a'");
    db.exec("DELETE FROM tail WHERE k = 'ключ'");
  });
  capture("many tables, mixed", () => {
    for (let i = 0; i < 20; i++) {
      db.exec(`INSERT INTO m${i}(id, v) VALUES (1, ${i}), (2, 'two'), (3, x'03')`);
      db.exec(`UPDATE m${i} SET v = ${i * 1.5} WHERE id = 2`);
      db.exec(`DELETE FROM m${i} WHERE id = 3`);
    }
    db.exec("INSERT INTO items(id, t) VALUES (100, 'plain')");
    db.exec("DELETE FROM tail WHERE k = 'k2'");
  });
  capture("large values", () => {
    insItem.run(200, 1, 1, BIG_TEXT, BIG_BLOB, null);
    insPair.run(BIG_TEXT, 3, BIG_BLOB, BIG_BLOB);
  });
  capture("update large values, PK change", () => {
    db.exec("UPDATE items SET t = t || '!' WHERE id = 200");
    db.exec("UPDATE items SET id = 201 WHERE id = 100");
    db.exec("UPDATE m0 SET id = 10 WHERE id = 1");
  });
  db.close();
  return fixtures;
}

const fixtures = buildFixtures();
const smallFixtures = fixtures.filter((f) => f.changeset.length < 4000);

// Hand-built changesets.
const enc = new TextEncoder();
const bytes = (...parts: (number | number[] | Uint8Array)[]): Uint8Array =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === "number" ? [p] : Array.from(p))));
const header = (pk: number[], name: string | number[]): number[] => [
  0x54,
  pk.length,
  ...pk,
  ...(typeof name === "string" ? Array.from(enc.encode(name)) : name),
  0,
];
const int = (v: number | bigint): number[] => {
  const b = new Uint8Array(9);
  b[0] = 1;
  new DataView(b.buffer).setBigInt64(1, BigInt(v));
  return Array.from(b);
};
const text = (s: string): number[] => {
  const b = enc.encode(s);
  assert.ok(b.length < 128);
  return [3, b.length, ...b];
};
const NULL = [5];
const UNDEF = [0];
const INSERT = 0x12;
const UPDATE = 0x17;
const DELETE = 0x09;

/** Table t(id PK, v): insert (1, 'a'). */
const VALID = bytes(header([1, 0], "t"), INSERT, 0, int(1), text("a"));

// ---------------------------------------------------------------- tests

test("SQLite-produced changesets are accepted, by us and by SQLite", () => {
  assert.ok(fixtures.length >= 6);
  for (const f of fixtures) {
    const counts = validateChangeset(f.changeset);
    const oracle = sqliteIterate(f.changeset);
    assert.equal(oracle.rc, 0, f.name);
    assert.equal(counts.changes, oracle.changes.length, f.name);
    assert.equal(decodeChangeset(f.changeset).changes.length, counts.changes, f.name);
  }
});

test("decode → encode is byte-identical", () => {
  for (const f of fixtures) {
    assertBytes(encodeChangeset(decodeChangeset(f.changeset)), f.changeset, f.name);
  }
});

test("decoded changes match what SQLite's own iterator reads", () => {
  for (const f of fixtures) {
    const ours = decodeChangeset(f.changeset).changes;
    const theirs = sqliteIterate(f.changeset).changes;
    assert.equal(ours.length, theirs.length);
    ours.forEach((c, i) => {
      const s = theirs[i]!;
      const op = { insert: capi.SQLITE_INSERT, update: capi.SQLITE_UPDATE, delete: capi.SQLITE_DELETE }[c.op];
      assert.equal(c.table.name, s.table, f.name);
      assert.equal(op, s.op, f.name);
      assert.equal(c.indirect ? 1 : 0, s.indirect, f.name);
      // sqlite-wasm yields bigint only outside the safe range, like us, but
      // null for a zero-length BLOB (sqlite3_value_blob gives no pointer), and
      // its TextDecoder drops a leading BOM from TEXT.
      const wasmView = (r: (SqlValue | undefined)[] | undefined) =>
        r?.map((v) => (v instanceof Uint8Array && v.length === 0 ? null : typeof v === "string" ? v.replace(/^\ufeff/, "") : v));
      assert.deepEqual(wasmView(c.old), s.old, `${f.name} change ${i} old`);
      assert.deepEqual(wasmView(c.new), s.new, `${f.name} change ${i} new`);
    });
  }
});

test("decoded values are what was written", () => {
  const db = new DatabaseSync(":memory:");
  db.exec(SCHEMA);
  const session = db.createSession();
  db.prepare("INSERT INTO items(id, i, r, t, b, anything) VALUES (?, ?, ?, ?, ?, ?)").run(
    7,
    2n ** 53n + 1n,
    1.0,
    "héllo 🌍",
    new Uint8Array([0, 1, 254, 255]),
    null,
  );
  db.prepare("INSERT INTO items(id, i, r, t, b, anything) VALUES (?, ?, ?, ?, ?, ?)").run(8, -(2n ** 63n), -0.5, "", new Uint8Array(0), 2 ** 53 - 1);
  db.prepare("INSERT INTO pairs VALUES (?, ?, ?, ?)").run("k", 5, new Uint8Array([10, 11]), "\ufeffdee");
  const cs = decodeChangeset(session.changeset());
  db.close();

  assert.equal(cs.tables.length, 2);
  const [items, pairs] = cs.tables as [TableHeader, TableHeader];
  assert.equal(items.name, "items");
  assert.deepEqual(items.pk, [true, false, false, false, false, false]);
  // PRIMARY KEY(c, a): SQLite writes the position within the key, not a boolean.
  assert.equal(pairs.name, "pairs");
  assert.deepEqual(pairs.pk, [true, false, true, false]);
  assert.deepEqual(Array.from(pairs.pkRaw!), [2, 0, 1, 0]);

  const byId = new Map(cs.changes.filter((c) => c.table === items).map((c) => [c.new![0], c]));
  const seven = byId.get(7)!;
  assert.equal(seven.op, "insert");
  assert.equal(seven.indirect, false);
  assert.equal(seven.old, undefined);
  assert.deepEqual(seven.new, [7, 2n ** 53n + 1n, 1, "héllo 🌍", new Uint8Array([0, 1, 254, 255]), null]);
  assert.deepEqual(seven.integralReals, { old: [], new: [2] }, "REAL 1.0 is marked so it is not re-encoded as INTEGER");
  const eight = byId.get(8)!;
  assert.deepEqual(eight.new, [8, -(2n ** 63n), -0.5, "", new Uint8Array(0), 2 ** 53 - 1]);
  // node:sqlite binds every JS number as a REAL: into a column without affinity it stays one.
  assert.deepEqual(eight.integralReals, { old: [], new: [5] });
  const pairChange = cs.changes.find((c) => c.table === pairs)!;
  // A leading BOM is text, not a marker to strip.
  assert.deepEqual(pairChange.new, ["k", 5, new Uint8Array([10, 11]), "\ufeffdee"]);
  assert.deepEqual(primaryKey(pairChange), ["k", new Uint8Array([10, 11])]);
  assert.deepEqual(primaryKey(seven), [7]);
  // Consecutive changes of one table share its header object.
  assert.ok(cs.changes.filter((c) => c.table.name === "items").every((c) => c.table === items));
});

test("decoded UPDATE and DELETE records, and primaryKey from old", () => {
  const db = new DatabaseSync(":memory:");
  db.exec(SCHEMA);
  db.exec("INSERT INTO pairs VALUES ('k', 5, x'0a', 'dee'), ('z', 6, x'0b', 'e')");
  const session = db.createSession();
  db.exec("UPDATE pairs SET d = 'new' WHERE a = 'k'; DELETE FROM pairs WHERE a = 'z'");
  const cs = decodeChangeset(session.changeset());
  db.close();
  const update = cs.changes.find((c) => c.op === "update")!;
  assert.deepEqual(update.old, ["k", undefined, new Uint8Array([10]), "dee"]);
  assert.deepEqual(update.new, [undefined, undefined, undefined, "new"]);
  assert.deepEqual(primaryKey(update), ["k", new Uint8Array([10])]);
  const del = cs.changes.find((c) => c.op === "delete")!;
  assert.deepEqual(del.old, ["z", 6, new Uint8Array([11]), "e"]);
  assert.equal(del.new, undefined);
  assert.deepEqual(primaryKey(del), ["z", new Uint8Array([11])]);
});

test("invert is byte-identical to sqlite3changeset_invert, and invert(invert(x)) = x", () => {
  for (const f of fixtures) {
    const ours = invertChangeset(f.changeset);
    const theirs = sqliteInvert(f.changeset);
    assert.ok(theirs instanceof Uint8Array, `${f.name}: SQLite refused to invert (rc ${String(theirs)})`);
    assertBytes(ours, theirs, f.name);
    assertBytes(invertChangeset(ours), f.changeset, `${f.name} double inversion`);
    validateChangeset(ours);
  }
});

test("applying the inverse restores the previous state", () => {
  const db = new DatabaseSync(":memory:");
  db.exec(SCHEMA);
  for (const f of fixtures) {
    assert.deepEqual(snapshot(db), f.before, `${f.name}: replay diverged`);
    assert.equal(db.applyChangeset(f.changeset), true, `${f.name}: apply`);
    assert.deepEqual(snapshot(db), f.after, `${f.name}: after apply`);
    assert.notDeepEqual(f.after, f.before);
    assert.equal(db.applyChangeset(invertChangeset(f.changeset)), true, `${f.name}: apply inverse`);
    assert.deepEqual(snapshot(db), f.before, `${f.name}: inverse did not restore the state`);
    db.applyChangeset(f.changeset);
  }
  db.close();
});

test("invalid UTF-8 text is accepted and survives invert byte for byte", () => {
  const upd = bytes(header([1, 0], "t"), UPDATE, 1, int(1), [3, 1, 0x80], UNDEF, [3, 2, 0xed, 0xa0]);
  validateChangeset(upd);
  const ins = bytes(header([1, 0], "t"), INSERT, 0, int(1), [3, 3, 0xff, 0xc3, 0x28], DELETE, 1, int(2), [3, 1, 0xfe]);
  for (const b of [upd, ins]) {
    const theirs = sqliteInvert(b);
    assert.ok(theirs instanceof Uint8Array);
    assertBytes(invertChangeset(b), theirs, "invert");
    assertBytes(invertChangeset(invertChangeset(b)), b, "double invert");
  }
  assert.equal(decodeChangeset(ins).changes[0]!.new![1], "\ufffd\ufffd(");
});

test("encode: one header per run of changes of a table, blocks without changes kept", () => {
  const a: TableHeader = { name: "a", pk: [true, false] };
  const b: TableHeader = { name: "b", pk: [false, true] };
  const ins = (table: TableHeader, id: number): Change => ({
    table,
    op: "insert",
    indirect: false,
    old: undefined,
    new: table === a ? [id, "x"] : ["y", id],
  });
  const cs: Changeset = { tables: [a, b], changes: [ins(a, 1), ins(a, 2), ins(b, 3), ins(a, 4)] };
  const out = encodeChangeset(cs);
  assert.equal(validateChangeset(out).tables, 3);
  const back = decodeChangeset(out);
  assert.deepEqual(
    back.changes.map((c) => [c.table.name, c.new![c.table.name === "a" ? 0 : 1]]),
    [["a", 1], ["a", 2], ["b", 3], ["a", 4]],
  );
  assert.deepEqual(back.tables.map((t) => t.name), ["a", "b", "a"]);
  assert.equal(back.changes[0]!.table, back.changes[1]!.table);
  // Equal but distinct header objects outside cs.tables do not repeat the header.
  const a2: TableHeader = { name: "a", pk: [true, false] };
  assert.equal(validateChangeset(encodeChangeset({ tables: [], changes: [ins(a, 1), ins(a2, 2)] })).tables, 1);

  // A header with no changes (SQLite's iterator accepts it) round-trips in place.
  const withEmpty = bytes(header([1], "e"), header([1, 0], "t"), INSERT, 0, int(1), NULL, header([0, 1], "z"));
  assert.equal(sqliteIterate(withEmpty).rc, 0);
  assert.deepEqual(validateChangeset(withEmpty), { tables: 3, changes: 1 });
  assertBytes(encodeChangeset(decodeChangeset(withEmpty)), withEmpty, "empty blocks");
  const theirs = sqliteInvert(withEmpty);
  assert.ok(theirs instanceof Uint8Array);
  assertBytes(invertChangeset(withEmpty), theirs, "invert with empty blocks");

  // Without pkRaw, PK columns are numbered in column order.
  const pk2: TableHeader = { name: "p", pk: [false, true, true] };
  const encoded = encodeChangeset({ tables: [pk2], changes: [{ table: pk2, op: "delete", indirect: true, old: [1, 2, 3], new: undefined }] });
  assert.deepEqual(Array.from(encoded.subarray(2, 5)), [0, 1, 2]);
  assert.equal(encodeChangeset({ tables: [], changes: [] }).length, 0);
});

test("encode refuses changes that would not form a valid changeset", () => {
  const t: TableHeader = { name: "t", pk: [true, false] };
  const bad: Change[] = [
    { table: t, op: "insert", indirect: false, old: undefined, new: [1] },
    { table: t, op: "insert", indirect: false, old: undefined, new: [1, undefined] },
    { table: t, op: "delete", indirect: false, old: undefined, new: [1, 2] },
    { table: t, op: "update", indirect: false, old: [1, 2], new: [undefined, undefined] },
    { table: t, op: "update", indirect: false, old: [undefined, 2], new: [undefined, 3] },
    { table: t, op: "insert", indirect: false, old: undefined, new: [1, Number.NaN] },
    { table: t, op: "insert", indirect: false, old: undefined, new: [1, 2n ** 64n] },
    { table: t, op: "insert", indirect: false, old: undefined, new: [1, {} as unknown as SqlValue] },
    { table: { name: "sqlite_x", pk: [true, false] }, op: "insert", indirect: false, old: undefined, new: [1, 2] },
    { table: { name: "t\0", pk: [true, false] }, op: "insert", indirect: false, old: undefined, new: [1, 2] },
    { table: { name: "t", pk: [false, false] }, op: "insert", indirect: false, old: undefined, new: [1, 2] },
    { table: { name: "t", pk: [true, false], pkRaw: new Uint8Array([0, 1]) }, op: "insert", indirect: false, old: undefined, new: [1, 2] },
  ];
  for (const [i, c] of bad.entries()) {
    assert.throws(() => encodeChangeset({ tables: [c.table], changes: [c] }), isMalformed, `case ${i}`);
  }
  assert.throws(() => primaryKey({ table: t, op: "update", indirect: false, old: [undefined, 1], new: [undefined, 2] }), isMalformed);
});

/**
 * Each strictness rule, with what SQLite's iterator (sqlite3changeset_next)
 * does with the same bytes: "accepts" marks where we are deliberately stricter.
 */
interface Case {
  rule: string;
  input: Uint8Array;
  message: RegExp;
  sqlite: "accepts" | "rejects";
}

function patchsetFromSqlite(): Uint8Array {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
  const s = db.createSession();
  db.exec("INSERT INTO t VALUES (1, 'a')");
  const p = s.patchset();
  db.close();
  return p;
}

/** node:sqlite writes an UPDATE that only "changes" a PK column when its value changes type (1 → 1.0). */
function pkTypeOnlyUpdateFromSqlite(): Uint8Array {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE t(a, id PRIMARY KEY, c); INSERT INTO t VALUES (1, 1, 'x')");
  const s = db.createSession();
  db.exec("UPDATE t SET id = 1.0 WHERE id = 1");
  const cs = s.changeset();
  assert.throws(() => db.applyChangeset(cs), /SQL logic error/, "SQLite cannot apply this changeset itself");
  db.close();
  return cs;
}

const T2 = header([1, 0], "t");
const cases: Case[] = [
  { rule: "zero-length input", input: bytes(), message: /empty input/, sqlite: "accepts" },
  { rule: "first byte not T", input: bytes(INSERT, 0, int(1), text("a")), message: /does not start with a table header/, sqlite: "rejects" },
  { rule: "patchset", input: patchsetFromSqlite(), message: /patchset/, sqlite: "accepts" },
  { rule: "patchset block after a changeset block", input: bytes(VALID, 0x50, 2, 1, 0, 0x75, 0, INSERT, 0, int(2), NULL), message: /patchset/, sqlite: "accepts" },
  { rule: "0 columns", input: bytes(0x54, 0, 0x74, 0), message: /0 columns/, sqlite: "rejects" },
  {
    rule: "more than MAX_COLUMNS columns",
    input: bytes(0x54, 0x8f, 0x51, 1, new Uint8Array(2000), 0x74, 0, INSERT, 0, Array.from({ length: 2001 }, () => NULL).flat()),
    message: /2001 columns/,
    sqlite: "accepts",
  },
  { rule: "no PK column", input: bytes(header([0, 0], "t"), INSERT, 0, int(1), NULL), message: /no primary-key column/, sqlite: "accepts" },
  { rule: "PK flags not 1..k (duplicate)", input: bytes(header([1, 1], "t"), INSERT, 0, int(1), NULL), message: /appears twice/, sqlite: "accepts" },
  { rule: "PK flags not 1..k (gap)", input: bytes(header([0, 2], "t"), INSERT, 0, int(1), NULL), message: /not 1\.\.1/, sqlite: "accepts" },
  { rule: "PK flags not 1..k (big)", input: bytes(header([7, 0], "t"), INSERT, 0, int(1), NULL), message: /not 1\.\.1/, sqlite: "accepts" },
  { rule: "name without NUL", input: bytes(0x54, 2, 1, 0, 0x74, 0x75), message: /no NUL terminator/, sqlite: "rejects" },
  { rule: "empty name", input: bytes(header([1, 0], ""), INSERT, 0, int(1), NULL), message: /empty table name/, sqlite: "accepts" },
  { rule: "sqlite_ table", input: bytes(header([1, 0], "sqlite_stat1"), INSERT, 0, int(1), NULL), message: /sqlite_/, sqlite: "accepts" },
  { rule: "SQLITE_ table (case)", input: bytes(header([1, 0], "SQLite_Sequence"), INSERT, 0, int(1), NULL), message: /sqlite_/, sqlite: "accepts" },
  { rule: "_relay_ table", input: bytes(header([1, 0], "_relay_outbox"), INSERT, 0, int(1), NULL), message: /_relay_/, sqlite: "accepts" },
  { rule: "_RELAY_ table (case)", input: bytes(header([1, 0], "_Relay_X"), INSERT, 0, int(1), NULL), message: /_relay_/, sqlite: "accepts" },
  { rule: "name not UTF-8", input: bytes(header([1, 0], [0x74, 0xff]), INSERT, 0, int(1), NULL), message: /not valid UTF-8/, sqlite: "accepts" },
  { rule: "unknown op byte", input: bytes(T2, 0x13, 0, int(1), NULL), message: /unknown change type 0x13/, sqlite: "rejects" },
  { rule: "indirect byte 2", input: bytes(T2, INSERT, 2, int(1), NULL), message: /indirect flag is 0x02/, sqlite: "accepts" },
  { rule: "value type 6", input: bytes(T2, INSERT, 0, int(1), [6]), message: /unknown value type 0x06/, sqlite: "accepts" },
  { rule: "value type 0xff", input: bytes(T2, DELETE, 0, [0xff], int(1)), message: /unknown value type 0xff/, sqlite: "accepts" },
  { rule: "undefined in INSERT", input: bytes(T2, INSERT, 0, int(1), UNDEF), message: /INSERT record: column 1 is undefined/, sqlite: "accepts" },
  { rule: "undefined in DELETE", input: bytes(T2, DELETE, 0, UNDEF, NULL), message: /DELETE record: column 0 is undefined/, sqlite: "accepts" },
  { rule: "UPDATE old lacks PK", input: bytes(T2, UPDATE, 0, UNDEF, text("a"), UNDEF, text("b")), message: /lacks primary-key column 0/, sqlite: "accepts" },
  { rule: "UPDATE new without old", input: bytes(T2, UPDATE, 0, int(1), UNDEF, UNDEF, text("b")), message: /without its old value/, sqlite: "accepts" },
  { rule: "UPDATE old without new", input: bytes(T2, UPDATE, 0, int(1), text("a"), UNDEF, UNDEF), message: /does not change/, sqlite: "accepts" },
  { rule: "UPDATE changes nothing", input: bytes(T2, UPDATE, 0, int(1), UNDEF, UNDEF, UNDEF), message: /changes no non-primary-key column/, sqlite: "accepts" },
  { rule: "UPDATE changes only a PK column (SQLite-made)", input: pkTypeOnlyUpdateFromSqlite(), message: /changes no non-primary-key column/, sqlite: "accepts" },
  { rule: "REAL NaN", input: bytes(T2, INSERT, 0, int(1), [2, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]), message: /NaN/, sqlite: "accepts" },
  { rule: "non-minimal varint", input: bytes(0x54, 0x80, 2, 1, 0, 0x74, 0, INSERT, 0, int(1), NULL), message: /non-minimal varint/, sqlite: "accepts" },
  { rule: "varint above 2^31-1 (SQLite keeps the low 31 bits)", input: bytes(0x54, 0x88, 0x80, 0x80, 0x80, 0x02, 1, 0, 0x74, 0, INSERT, 0, int(1), NULL), message: /above 2\^31-1/, sqlite: "accepts" },
  { rule: "varint longer than 5 bytes", input: bytes(T2, INSERT, 0, int(1), [4, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00]), message: /longer than 5 bytes/, sqlite: "rejects" },
  { rule: "varint past the end", input: bytes(T2, INSERT, 0, int(1), [4, 0x81]), message: /varint runs past the end/, sqlite: "rejects" },
  { rule: "column count varint missing", input: bytes(0x54), message: /ends before its varint/, sqlite: "rejects" },
  { rule: "PK flags truncated", input: bytes(0x54, 3, 1), message: /inside the primary-key flags/, sqlite: "rejects" },
  { rule: "TEXT longer than the input", input: bytes(T2, INSERT, 0, int(1), [3, 5, 0x61]), message: /TEXT of 5 bytes runs past the end/, sqlite: "rejects" },
  { rule: "BLOB longer than the input", input: bytes(T2, INSERT, 0, int(1), [4, 2, 0x61]), message: /BLOB of 2 bytes runs past the end/, sqlite: "rejects" },
  { rule: "INTEGER truncated", input: bytes(T2, INSERT, 0, int(1).slice(0, 5)), message: /INTEGER truncated/, sqlite: "rejects" },
  { rule: "REAL truncated", input: bytes(T2, INSERT, 0, int(1), [2, 0, 0]), message: /REAL truncated/, sqlite: "rejects" },
  { rule: "record truncated", input: bytes(T2, INSERT, 0, int(1)), message: /ends before column 1/, sqlite: "rejects" },
  { rule: "trailing op byte", input: bytes(VALID, INSERT), message: /truncated after its type byte/, sqlite: "rejects" },
  { rule: "trailing incomplete change", input: bytes(VALID, DELETE, 0, int(1)), message: /ends before column 1/, sqlite: "rejects" },
  { rule: "trailing garbage", input: bytes(VALID, 0x00), message: /unknown change type 0x00/, sqlite: "rejects" },
];

test("VALID, the base of the hand-built cases, is accepted", () => {
  assert.deepEqual(validateChangeset(VALID), { tables: 1, changes: 1 });
  assert.equal(sqliteIterate(VALID).rc, 0);
});

for (const c of cases) {
  test(`strict: ${c.rule} → malformed_changeset (SQLite ${c.sqlite})`, () => {
    for (const f of [validateChangeset, decodeChangeset, invertChangeset]) {
      assert.throws(
        () => f(c.input),
        (e: unknown) => {
          assert.ok(isMalformed(e), `${f.name}: not a malformed_changeset RelayError: ${String(e)}`);
          const message = (e as Error).message;
          assert.match(message, c.message, f.name);
          assert.match(message, /\(byte \d+\)$/, f.name);
          return true;
        },
      );
    }
    assert.equal(sqliteIterate(c.input).rc === 0 ? "accepts" : "rejects", c.sqlite, "SQLite's iterator");
  });
}

test("an UPDATE that also gives a PK column a new value (SQLite writes it for 1 → 1.0) is accepted", () => {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE t(a, id PRIMARY KEY, c); INSERT INTO t VALUES (1, 1, 'x')");
  const s = db.createSession();
  db.exec("UPDATE t SET id = 1.0, c = 'y' WHERE id = 1");
  const cs = s.changeset();
  const [change] = decodeChangeset(cs).changes;
  assert.equal(change?.op, "update");
  assert.deepEqual(change.old, [undefined, 1, "x"]);
  assert.deepEqual(change.new, [undefined, 1, "y"]);
  assert.deepEqual(change.integralReals, { old: [], new: [1] });
  assertBytes(encodeChangeset(decodeChangeset(cs)), cs, "round trip");
  const theirs = sqliteInvert(cs);
  assert.ok(theirs instanceof Uint8Array);
  // Like SQLite, invert drops the PK's new value: the inverse only restores c.
  assertBytes(invertChangeset(cs), theirs, "invert");
  assert.deepEqual(decodeChangeset(invertChangeset(cs)).changes[0]!.new, [undefined, undefined, "x"]);
  // SQLite's apply compares the PK binary (REAL 1.0 now vs INTEGER 1 in the
  // inverse's old record) and reports a DATA conflict. (Resolving it with
  // REPLACE then deletes the row in SQLite 3.53: PK type changes do not undo.)
  const conflicts: number[] = [];
  db.applyChangeset(invertChangeset(cs), {
    onConflict: (type: number) => (conflicts.push(type), constants.SQLITE_CHANGESET_OMIT),
  });
  assert.deepEqual(conflicts, [constants.SQLITE_CHANGESET_DATA]);
  db.close();
});

test("a table header without changes is accepted, like SQLite does", () => {
  for (const b of [bytes(header([1, 0], "t")), bytes(VALID, header([1], "u")), bytes(header([1], "u"), VALID)]) {
    assert.equal(sqliteIterate(b).rc, 0);
    validateChangeset(b);
    assertBytes(encodeChangeset(decodeChangeset(b)), b, "round trip");
  }
});

// ---------------------------------------------------------------- property

/** Either rejected as malformed by both entry points, or accepted by both and by SQLite, with every identity holding. */
function checkAnyInput(b: Uint8Array): boolean {
  let counts: { tables: number; changes: number } | undefined;
  let validateError: unknown;
  try {
    counts = validateChangeset(b);
  } catch (e) {
    validateError = e;
  }
  let decoded: Changeset | undefined;
  let decodeError: unknown;
  try {
    decoded = decodeChangeset(b);
  } catch (e) {
    decodeError = e;
  }
  if (counts === undefined) {
    assert.ok(isMalformed(validateError), `validateChangeset threw ${String(validateError)}`);
    assert.ok(isMalformed(decodeError), `decodeChangeset disagrees: ${String(decodeError)}`);
    assert.equal((decodeError as Error).message, (validateError as Error).message);
    assert.throws(() => invertChangeset(b), isMalformed);
    return false;
  }
  assert.ok(decoded !== undefined, `decodeChangeset threw ${String(decodeError)} where validateChangeset accepted`);
  assert.deepEqual({ tables: decoded.tables.length, changes: decoded.changes.length }, counts);
  // Whatever we accept, SQLite reads and inverts the same way.
  assert.equal(sqliteIterate(b).rc, 0, "SQLite's iterator refuses what we accept");
  const inverted = invertChangeset(b);
  const theirs = sqliteInvert(b);
  assert.ok(theirs instanceof Uint8Array, "SQLite's invert refuses what we accept");
  assertBytes(inverted, theirs, "invert");
  validateChangeset(inverted);
  const reencoded = encodeChangeset(decoded);
  assert.deepEqual(decodeChangeset(reencoded), decoded);
  if (hex(reencoded) !== hex(b)) {
    const texts = decoded.changes.flatMap((c) => [...(c.old ?? []), ...(c.new ?? [])]).filter((v) => typeof v === "string");
    assert.ok(texts.some((t) => t.includes("\ufffd")), "re-encoding differs although all text was valid UTF-8");
  }
  return true;
}

type Mutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "set"; at: number; value: number }
  | { kind: "truncate"; at: number }
  | { kind: "insert"; at: number; value: number }
  | { kind: "remove"; at: number };

function mutate(input: Uint8Array, mutations: Mutation[]): Uint8Array {
  let b = Array.from(input);
  for (const m of mutations) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    switch (m.kind) {
      case "flip":
        b[at] = b[at]! ^ (1 << m.bit);
        break;
      case "set":
        b[at] = m.value;
        break;
      case "truncate":
        b = b.slice(0, at);
        break;
      case "insert":
        b.splice(at, 0, m.value);
        break;
      case "remove":
        b.splice(at, 1);
        break;
    }
  }
  return Uint8Array.from(b);
}

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 0x09, 0x12, 0x17, 0x50, 0x54, 0x80, 0xff) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("remove" as const), at: fc.nat() }),
);

test("property: random bytes are accepted consistently or refused as malformed_changeset", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 120 }), fc.constantFrom(bytes(), bytes(0x54), T2, VALID), (tail, prefix) => {
      checkAnyInput(bytes(prefix, tail));
    }),
    { numRuns: 3000 },
  );
});

test("property: mutated SQLite changesets are accepted consistently or refused as malformed_changeset", () => {
  const bases = [...smallFixtures.map((f) => f.changeset), VALID];
  let accepted = 0;
  fc.assert(
    fc.property(fc.nat({ max: bases.length - 1 }), fc.array(mutationArb, { minLength: 1, maxLength: 3 }), (i, mutations) => {
      // Counted to show that the property exercises both outcomes.
      if (checkAnyInput(mutate(bases[i]!, mutations))) accepted++;
    }),
    { numRuns: 10_000 },
  );
  assert.ok(accepted > 200, `only ${accepted} mutated inputs were accepted`);
});

// ---------------------------------------------------------------- size

test("a ~40 MB changeset validates", () => {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE big(id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT)");
  const session = db.createSession();
  const insert = db.prepare("INSERT INTO big VALUES (?, ?, ?, ?)");
  db.exec("BEGIN");
  for (let i = 0; i < 650_000; i++) insert.run(i, i * 7919, i / 3, `row ${String(i).padStart(8, "0")} payload..........`);
  db.exec("COMMIT");
  const cs = session.changeset();
  db.close();
  assert.ok(cs.length > 38_000_000, `only ${cs.length} bytes`);
  const started = performance.now();
  const counts = validateChangeset(cs);
  const ms = performance.now() - started;
  assert.deepEqual(counts, { tables: 1, changes: 650_000 });
  console.log(`validateChangeset: ${(cs.length / 1e6).toFixed(1)} MB, ${counts.changes} changes in ${ms.toFixed(0)} ms`);
});

test("changesetTables: headers decoded once and shared stay right when the next changeset's header differs in any byte", () => {
  const captured = (ddl: string, sql: string) => {
    const db = new DatabaseSync(":memory:");
    db.exec(ddl);
    const s = db.createSession();
    db.exec(sql);
    return s.changeset();
  };
  // Same length of header bytes, different name / PK flags / column count.
  const a = captured("CREATE TABLE ta(x PRIMARY KEY, y)", "INSERT INTO ta VALUES (1, 2)");
  const b = captured("CREATE TABLE tb(x PRIMARY KEY, y)", "INSERT INTO tb VALUES (1, 2)");
  const c = captured("CREATE TABLE ta(x, y, PRIMARY KEY(y))", "INSERT INTO ta VALUES (1, 2)");
  const d = captured("CREATE TABLE ta(x PRIMARY KEY, y, z)", "INSERT INTO ta VALUES (1, 2, 3)");
  const seen = [a, b, a, c, a, d, d, a].map((cs) => changesetTables(cs));
  const plain = (t: TableHeader[]) => t.map((h) => ({ name: h.name, pk: [...h.pk], pkRaw: [...h.pkRaw!] }));
  assert.deepEqual(seen.map(plain), [a, b, a, c, a, d, d, a].map((cs) => plain(decodeChangeset(cs).tables)));
  assert.equal(seen[5]![0], seen[6]![0], "a repeated header is the same object");
  assert.ok(Object.isFrozen(seen[5]![0]) && Object.isFrozen(seen[5]![0]!.pk), "shared, so frozen");
});

test("changesetTables: a large changeset's tables are remembered by its array, and a different array is scanned anew", () => {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT); CREATE TABLE other(id PRIMARY KEY)");
  const s = db.createSession();
  db.exec("BEGIN");
  for (let i = 0; i < 2000; i++) db.prepare("INSERT INTO big VALUES (?, ?)").run(i, "x".repeat(50));
  db.exec("INSERT INTO other VALUES (1); COMMIT");
  const cs = s.changeset();
  assert.ok(cs.byteLength >= 64 * 1024);
  const first = changesetTables(cs);
  assert.deepEqual(first.map((t) => t.name), ["big", "other"]);
  first.pop(); // the caller's copy
  assert.deepEqual(changesetTables(cs).map((t) => t.name), ["big", "other"]);
  // The same bytes broken in another array: still refused.
  const broken = cs.slice(0, cs.byteLength - 1);
  assert.throws(() => changesetTables(broken), RelayError);
});
