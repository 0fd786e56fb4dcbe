import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaultDriverKind, openDriver } from "../client/drivers/index.ts";
import { CONFLICT, RESOLUTION, type ConflictType, type Driver, type DriverKind, type Resolution, type Row } from "../client/drivers/types.ts";
import { isRelayError } from "../client/errors.ts";

const KINDS: readonly DriverKind[] = ["node", "wasm"];

const SCHEMA = `
  CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB, big INTEGER, note);
  CREATE TABLE tags(item INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (item, tag));
  CREATE TABLE users(id TEXT PRIMARY KEY, email TEXT UNIQUE, age INTEGER);
`;
const TABLES = ["items", "tags", "users"] as const;

/** A mix of every storage class, all three param styles, updates and deletes. */
function workload(d: Driver): void {
  d.run("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", [1, "apple", 1.25, new Uint8Array([0, 1, 255]), 2n ** 62n, null]);
  d.run("INSERT INTO items VALUES (:id, :name, :price, :data, :big, :note)", {
    id: 2,
    name: "pear ünïcode 🍐",
    price: -0.5,
    data: new Uint8Array(0),
    big: -(2n ** 63n),
    note: 42,
  });
  d.run("INSERT INTO items VALUES ($id, $name, $price, $data, $big, $note)", {
    $id: 3,
    $name: "",
    $price: 1e300,
    $data: null,
    $big: Number.MAX_SAFE_INTEGER,
    $note: 3.5,
  });
  d.run("INSERT INTO items(id, name, note) VALUES (?, ?, ?)", [4, "to delete", new Uint8Array([9])]);
  for (const tag of ["fruit", "red", "green"]) d.run("INSERT INTO tags VALUES (?, ?)", [1, tag]);
  d.run("INSERT INTO users VALUES (?, ?, ?), (?, ?, ?)", ["u1", "a@x", 30, "u2", "b@x", null]);
  d.run("UPDATE items SET price = ?, note = ? WHERE id = ?", [2.75, "x", 1]);
  d.run("UPDATE users SET age = age + 1 WHERE id = ?", ["u1"]);
  d.run("DELETE FROM items WHERE id = ?", [4]);
  d.run("DELETE FROM tags WHERE item = ? AND tag = ?", [1, "red"]);
}

/** Every table's rows with each column's storage class, as plain objects. */
function dump(d: Driver): Record<string, object[]> {
  const out: Record<string, object[]> = {};
  for (const t of TABLES) {
    const cols = d.all(`SELECT name FROM pragma_table_info('${t}')`).map((r) => String(r["name"]));
    const typeofs = cols.map((c) => `typeof(${c}) AS "${c}:type"`).join(", ");
    out[t] = d.all(`SELECT *, ${typeofs} FROM ${t} ORDER BY 1, 2`).map((r) => ({ ...r }));
  }
  return out;
}

/** Opens an in-memory database, tracked for closing after the suite. */
const opened: Driver[] = [];
after(() => opened.forEach((d) => d.close()));
async function memory(kind: DriverKind, schema = SCHEMA): Promise<Driver> {
  const d = await openDriver(kind, ":memory:");
  opened.push(d);
  d.exec(schema);
  return d;
}

function capture(d: Driver, write: (d: Driver) => void): Uint8Array {
  const s = d.session();
  try {
    write(d);
    return s.changeset();
  } finally {
    s.close();
  }
}

function assertApplyFailed(fn: () => unknown): void {
  assert.throws(fn, (e: unknown) => isRelayError(e, "apply_failed"));
}

describe("drivers agree", () => {
  it("produce byte-identical changesets for the same writes", async () => {
    const [n, w] = [await memory("node"), await memory("wasm")];
    const csNode = capture(n, workload);
    const csWasm = capture(w, workload);
    assert.ok(csNode.length > 100);
    assert.deepEqual(csWasm, csNode);
    assert.deepEqual(dump(w), dump(n));
  });

  it("apply each other's changesets to equal tables", async () => {
    for (const [from, to] of [["node", "wasm"], ["wasm", "node"]] as const) {
      const src = await memory(from);
      const cs = capture(src, workload);
      const dst = await memory(to);
      assert.equal(dst.applyChangeset(cs, () => assert.fail("no conflict expected")), true);
      assert.deepEqual(dump(dst), dump(src), `${from} -> ${to}`);
      assert.equal(dump(dst)["items"]!.length, 3);
    }
  });

  it("return the same JS types for the same data", async () => {
    const sql = `SELECT 1 AS i, 1.5 AS r, 'x' AS t, x'00ff' AS b, x'' AS eb, NULL AS n,
      9007199254740993 AS big, -9007199254740991 AS minsafe, 2.0 AS two,
      typeof(?) AS bi, typeof(?) AS br, typeof(?) AS bb, typeof(?) AS bu, typeof(?) AS bt, ? AS eblob`;
    const params = [1, 1.5, 2n, 2 ** 60, "s", new Uint8Array(0)];
    const expected = {
      i: 1, r: 1.5, t: "x", b: new Uint8Array([0, 255]), eb: new Uint8Array(0), n: null,
      big: 9007199254740993n, minsafe: -9007199254740991, two: 2,
      // 2 ** 60 is integral but not a safe integer: it stays a REAL on both drivers.
      bi: "integer", br: "real", bb: "integer", bu: "real", bt: "text", eblob: new Uint8Array(0),
    };
    for (const kind of KINDS) {
      const d = await memory(kind, "");
      const [row] = d.all(sql, params);
      assert.deepEqual({ ...row }, expected, kind);
      assert.equal(Object.getPrototypeOf(row), null, `${kind}: rows have a null prototype`);
      d.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
      assert.deepEqual(d.run("INSERT INTO t(v) VALUES (?)", [1]), { changes: 1, lastInsertRowid: 1 });
      assert.deepEqual(d.run("INSERT INTO t VALUES (?, ?)", [2n ** 62n, 1]), { changes: 1, lastInsertRowid: 2n ** 62n });
      assert.deepEqual(d.run("UPDATE t SET v = v + 1"), { changes: 2, lastInsertRowid: 2n ** 62n });
    }
  });

  it("throw errors of the same shape", async () => {
    for (const kind of KINDS) {
      const d = await memory(kind);
      d.run("INSERT INTO users VALUES ('u1', 'a@x', 1)");
      assert.throws(() => d.run("INSERT INTO users VALUES ('u2', 'a@x', 1)"), {
        code: "ERR_SQLITE_ERROR",
        errcode: 2067, // SQLITE_CONSTRAINT_UNIQUE
        message: /UNIQUE constraint failed: users\.email/,
      });
      assert.throws(() => d.exec("SELECT * FROM nope"), { errcode: 1, message: /no such table: nope/ });
    }
  });
});

for (const kind of KINDS) {
  describe(`${kind} driver`, () => {
    it("runs multi-statement SQL and all three parameter styles", async () => {
      const d = await memory(kind, "CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b');");
      assert.equal(d.kind, kind);
      assert.deepEqual(d.all("SELECT v FROM t WHERE id = ?", [2]).map((r) => r["v"]), ["b"]);
      assert.deepEqual(d.all("SELECT v FROM t WHERE id = ?1 OR id = ?2 ORDER BY id", [1, 2]).map((r) => r["v"]), ["a", "b"]);
      // Named parameters: keys with or without their prefix.
      assert.deepEqual(d.all("SELECT v FROM t WHERE id = :id", { id: 1 }).map((r) => r["v"]), ["a"]);
      assert.deepEqual(d.all("SELECT v FROM t WHERE id = :id", { ":id": 1 }).map((r) => r["v"]), ["a"]);
      assert.deepEqual(d.all("SELECT v FROM t WHERE id = $id", { id: 2 }).map((r) => r["v"]), ["b"]);
      assert.deepEqual(d.all("SELECT v FROM t WHERE id = @id", { "@id": 2 }).map((r) => r["v"]), ["b"]);
      assert.throws(() => d.all("SELECT v FROM t WHERE id = :id", { nope: 1 }), /Unknown named parameter/);
      assert.throws(() => d.all("SELECT v FROM t WHERE id = ?", [1, 2]), /column index out of range/);
      // A cached statement forgets the previous call's bindings.
      assert.deepEqual(d.all("SELECT ?1 AS a, ?2 AS b", [1, 2]).map((r) => ({ ...r })), [{ a: 1, b: 2 }]);
      assert.deepEqual(d.all("SELECT ?1 AS a, ?2 AS b", [1]).map((r) => ({ ...r })), [{ a: 1, b: null }]);
      assert.deepEqual(d.run("DELETE FROM t WHERE id > ?", [0]).changes, 2);
    });

    it("keeps cached statements correct across eviction and schema changes", async () => {
      const d = await memory(kind, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
      for (let i = 0; i < 200; i++) d.run(`INSERT INTO t VALUES (${i})`);
      for (let i = 0; i < 200; i++) assert.equal(d.all(`SELECT id + ${i} AS x FROM t WHERE id = ?`, [i])[0]!["x"], 2 * i);
      assert.deepEqual(Object.keys(d.all("SELECT * FROM t LIMIT 1")[0]!), ["id"]);
      d.exec("ALTER TABLE t ADD COLUMN extra DEFAULT 'e'");
      assert.deepEqual({ ...d.all("SELECT * FROM t LIMIT 1")[0] }, { id: 0, extra: "e" });
    });

    it("reports transactions and enforces foreign keys", async () => {
      const d = await memory(kind, "CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(id INTEGER PRIMARY KEY, p REFERENCES p(id));");
      assert.equal(d.inTransaction, false);
      d.exec("BEGIN");
      assert.equal(d.inTransaction, true);
      d.exec("COMMIT");
      assert.equal(d.inTransaction, false);
      assert.throws(() => d.run("INSERT INTO c VALUES (1, 99)"), /FOREIGN KEY constraint failed/);
    });

    it("captures one changeset per session, empty when nothing changed", async () => {
      const d = await memory(kind);
      const idle = d.session();
      assert.deepEqual(idle.changeset(), new Uint8Array(0));
      idle.close();

      const first = capture(d, (x) => x.run("INSERT INTO users VALUES ('u1', 'a@x', 1)"));
      const second = capture(d, (x) => x.run("INSERT INTO users VALUES ('u2', 'b@x', 2)"));
      assert.ok(first.length > 0 && second.length > 0);
      const replica = await memory(kind);
      assert.equal(replica.applyChangeset(second, () => assert.fail("no conflict expected")), true);
      assert.deepEqual(replica.all("SELECT id FROM users").map((r) => r["id"]), ["u2"]);

      const s = d.session();
      s.close();
      s.close(); // idempotent
      assert.throws(() => s.changeset());
    });

    describe("conflicts", () => {
      const SQL = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, u TEXT UNIQUE)";

      /** A changeset from `write` on a copy holding `base`, applied to a target holding `target`. */
      async function conflict(
        base: string,
        write: string,
        target: string,
        resolution: Resolution,
      ): Promise<{ seen: ConflictType[]; result: boolean; rows: Row[] }> {
        const src = await memory(kind, SQL + ";" + base);
        const cs = capture(src, (d) => d.exec(write));
        const dst = await memory(kind, SQL + ";" + target);
        const seen: ConflictType[] = [];
        const result = dst.applyChangeset(cs, (type) => {
          seen.push(type);
          return resolution;
        });
        return { seen, result, rows: dst.all("SELECT * FROM t ORDER BY id").map((r) => ({ ...r })) };
      }

      it("DATA: REPLACE takes the change, OMIT keeps the row", async () => {
        const args = ["INSERT INTO t VALUES (1, 'a', NULL)", "UPDATE t SET v = 'b' WHERE id = 1", "INSERT INTO t VALUES (1, 'z', NULL)"] as const;
        const replaced = await conflict(...args, RESOLUTION.REPLACE);
        assert.deepEqual(replaced.seen, [CONFLICT.DATA]);
        assert.deepEqual(replaced.rows, [{ id: 1, v: "b", u: null }]);
        const omitted = await conflict(...args, RESOLUTION.OMIT);
        assert.deepEqual(omitted.seen, [CONFLICT.DATA]);
        assert.deepEqual(omitted.rows, [{ id: 1, v: "z", u: null }]);
      });

      it("NOTFOUND: OMIT skips the change", async () => {
        const r = await conflict(
          "INSERT INTO t VALUES (1, 'a', NULL), (2, 'b', NULL)",
          "UPDATE t SET v = 'c' WHERE id = 1; DELETE FROM t WHERE id = 2",
          "INSERT INTO t VALUES (3, 'keep', NULL)",
          RESOLUTION.OMIT,
        );
        assert.deepEqual(r.seen, [CONFLICT.NOTFOUND, CONFLICT.NOTFOUND]);
        assert.deepEqual(r.rows, [{ id: 3, v: "keep", u: null }]);
      });

      it("CONFLICT: REPLACE overwrites the existing row, OMIT keeps it", async () => {
        const args = ["", "INSERT INTO t VALUES (1, 'a', NULL)", "INSERT INTO t VALUES (1, 'z', NULL)"] as const;
        const replaced = await conflict(...args, RESOLUTION.REPLACE);
        assert.deepEqual(replaced.seen, [CONFLICT.CONFLICT]);
        assert.deepEqual(replaced.rows, [{ id: 1, v: "a", u: null }]);
        const omitted = await conflict(...args, RESOLUTION.OMIT);
        assert.deepEqual(omitted.seen, [CONFLICT.CONFLICT]);
        assert.deepEqual(omitted.rows, [{ id: 1, v: "z", u: null }]);
      });

      it("CONSTRAINT: a UNIQUE violation on a non-key column; OMIT skips only that row", async () => {
        const r = await conflict(
          "",
          "INSERT INTO t VALUES (2, 'b', 'dup'); INSERT INTO t VALUES (3, 'c', 'other')",
          "INSERT INTO t VALUES (1, 'z', 'dup')",
          RESOLUTION.OMIT,
        );
        assert.deepEqual(r.seen, [CONFLICT.CONSTRAINT]);
        assert.equal(r.result, true);
        assert.deepEqual(r.rows, [{ id: 1, v: "z", u: "dup" }, { id: 3, v: "c", u: "other" }]);
      });

      it("ABORT returns false and undoes the changes applied before it", async () => {
        const r = await conflict(
          "INSERT INTO t VALUES (5, 'x', NULL)",
          "INSERT INTO t VALUES (1, 'a', NULL); UPDATE t SET v = 'y' WHERE id = 5; INSERT INTO t VALUES (9, 'i', NULL)",
          "INSERT INTO t VALUES (5, 'changed', NULL)",
          RESOLUTION.ABORT,
        );
        assert.deepEqual(r.seen, [CONFLICT.DATA]);
        assert.equal(r.result, false);
        assert.deepEqual(r.rows, [{ id: 5, v: "changed", u: null }]);
      });

      it("an exception in the handler aborts the apply and is rethrown", async () => {
        const src = await memory(kind, SQL);
        const cs = capture(src, (d) => d.exec("INSERT INTO t VALUES (1, 'a', NULL); INSERT INTO t VALUES (2, 'b', NULL)"));
        const dst = await memory(kind, SQL + "; INSERT INTO t VALUES (2, 'z', NULL)");
        const boom = new Error("boom");
        assert.throws(() => dst.applyChangeset(cs, () => { throw boom; }), (e) => e === boom);
        assert.deepEqual(dst.all("SELECT id, v FROM t").map((r) => ({ ...r })), [{ id: 2, v: "z" }]);
        assert.equal(dst.inTransaction, false);
      });

      it("a handler returning something other than a resolution aborts with a TypeError", async () => {
        const src = await memory(kind, SQL);
        const cs = capture(src, (d) => d.exec("INSERT INTO t VALUES (1, 'a', NULL); INSERT INTO t VALUES (2, 'b', NULL)"));
        const dst = await memory(kind, SQL + "; INSERT INTO t VALUES (2, 'z', NULL)");
        assert.throws(() => dst.applyChangeset(cs, () => undefined as unknown as Resolution), TypeError);
        assert.deepEqual(dst.all("SELECT id, v FROM t").map((r) => ({ ...r })), [{ id: 2, v: "z" }]);
      });

      it("a resolution SQLite does not allow for the conflict type is apply_failed", async () => {
        const src = await memory(kind, SQL + "; INSERT INTO t VALUES (1, 'a', NULL)");
        const cs = capture(src, (d) => d.exec("DELETE FROM t WHERE id = 1"));
        const dst = await memory(kind, SQL);
        assertApplyFailed(() => dst.applyChangeset(cs, () => RESOLUTION.REPLACE)); // REPLACE on NOTFOUND: SQLITE_MISUSE
      });
    });

    it("applies inside the caller's transaction: ROLLBACK undoes it", async () => {
      const src = await memory(kind);
      const cs = capture(src, workload);
      const dst = await memory(kind);
      dst.exec("BEGIN");
      dst.run("INSERT INTO users VALUES ('mine', 'm@x', 1)");
      assert.equal(dst.applyChangeset(cs, () => RESOLUTION.ABORT), true);
      assert.equal(dst.inTransaction, true);
      assert.equal(dst.all("SELECT count(*) AS n FROM items")[0]!["n"], 3);
      dst.exec("ROLLBACK");
      assert.deepEqual(dump(dst), dump(await memory(kind)));
    });

    it("rejects corrupt changesets with apply_failed and leaves the database unchanged", async () => {
      const src = await memory(kind);
      const cs = capture(src, workload);
      const dst = await memory(kind);
      dst.run("INSERT INTO users VALUES ('mine', 'm@x', 1)");
      const before = dump(dst);
      const garbage = new Uint8Array(cs);
      garbage.fill(0xee, 12);
      // Cut inside a record near the end, so that earlier records apply before the error.
      for (const bad of [cs.subarray(0, cs.length - 3), garbage]) {
        assertApplyFailed(() => dst.applyChangeset(bad, () => RESOLUTION.OMIT));
        assert.deepEqual(dump(dst), before);
        assert.equal(dst.inTransaction, false);
      }
      // The same inside the caller's transaction: only the apply is undone.
      dst.exec("BEGIN");
      dst.run("INSERT INTO users VALUES ('tx', 't@x', 2)");
      assertApplyFailed(() => dst.applyChangeset(garbage, () => RESOLUTION.OMIT));
      assert.equal(dst.inTransaction, true);
      dst.exec("COMMIT");
      assert.deepEqual(dst.all("SELECT id FROM users ORDER BY id").map((r) => r["id"]), ["mine", "tx"]);
      // An empty changeset is a valid no-op.
      assert.equal(dst.applyChangeset(new Uint8Array(0), () => RESOLUTION.ABORT), true);
    });

    it("applies a 100k-row changeset", async (t) => {
      const SQL = "CREATE TABLE big(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)";
      const src = await memory(kind, SQL);
      const cs = capture(src, (d) => {
        d.exec("BEGIN");
        for (let i = 1; i <= 100_000; i++) d.run("INSERT INTO big VALUES (?, ?, ?)", [i, `name-${i}`, i % 1000]);
        d.exec("COMMIT");
      });
      const dst = await memory(kind, SQL);
      const t0 = performance.now();
      assert.equal(dst.applyChangeset(cs, () => RESOLUTION.ABORT), true);
      const ms = performance.now() - t0;
      assert.deepEqual({ ...dst.all("SELECT count(*) AS n, sum(qty) AS s, max(name) AS m FROM big")[0] }, { n: 100_000, s: 49_950_000, m: "name-99999" });
      t.diagnostic(`${kind}: applied ${cs.length} bytes (100k inserts) in ${ms.toFixed(0)} ms`);
    });

    it("close is idempotent and closes open sessions", async () => {
      const d = await openDriver(kind, ":memory:");
      assert.equal(d.persistent, false);
      d.exec(SCHEMA);
      const s = d.session();
      d.run("INSERT INTO users VALUES ('u', 'e', 1)");
      d.close();
      d.close();
      s.close();
      assert.throws(() => d.all("SELECT 1"), /not open/);
      assert.throws(() => d.exec("SELECT 1"), /not open/);
      assert.throws(() => d.inTransaction, /not open/);
      assert.throws(() => d.session(), /not open/);
    });
  });
}

describe("statement counts (changes() of the statement itself, no query for it)", () => {
  const SQL = `
    CREATE TABLE t(id INTEGER PRIMARY KEY, v);
    CREATE TABLE log(x);
    CREATE TABLE parent(id INTEGER PRIMARY KEY);
    CREATE TABLE child(id INTEGER PRIMARY KEY, p REFERENCES parent(id) ON DELETE CASCADE);
    CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.v); INSERT INTO log VALUES (new.v); END;
  `;
  /** [statement, params, expected changes], run in this order on one connection. */
  const STEPS: [string, readonly (number | string)[] | undefined, number][] = [
    ["INSERT INTO t(v) VALUES (1), (2), (3), (4), (5)", undefined, 5],
    // changes() keeps the last write's count across statements that write nothing:
    ["UPDATE t SET v = 0 WHERE id > ?", [100], 0],
    ["INSERT INTO t(v) VALUES (?), (?)", [6, 7], 2],
    ["SELECT * FROM t", undefined, 0],
    ["SELECT * FROM t WHERE id = ?", [1], 0],
    ["INSERT INTO t(v) VALUES (8)", undefined, 1],
    ["CREATE TABLE IF NOT EXISTS other(a)", undefined, 0],
    ["INSERT INTO t(v) VALUES (9)", undefined, 1],
    ["CREATE INDEX t_v ON t(v)", undefined, 0],
    ["UPDATE t SET v = v + 1 WHERE id <= ?", [3], 3],
    ["PRAGMA user_version = 7", undefined, 0],
    ["DELETE FROM t WHERE id = ?", [1], 1],
    ["SAVEPOINT s", undefined, 0],
    ["RELEASE s", undefined, 0],
    ["INSERT OR IGNORE INTO t(id, v) VALUES (?, ?)", [2, "dup"], 0],
    ["INSERT INTO t(id, v) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET v = excluded.v", [2, "upsert"], 1],
    ["WITH n(x) AS (VALUES (10), (11)) INSERT INTO t(v) SELECT x FROM n", undefined, 2],
    ["INSERT INTO t(v) VALUES (?) RETURNING id", [12], 1],
    ["DROP INDEX t_v", undefined, 0],
    // Rows written by triggers and foreign key actions are not the statement's own (as changes() counts).
    ["INSERT INTO parent VALUES (1), (2)", undefined, 2],
    ["INSERT INTO child VALUES (?, ?), (?, ?), (?, ?)", [1, 1, 2, 1, 3, 2], 3],
    ["DELETE FROM parent WHERE id = ?", [1], 1],
    ["SELECT count(*) FROM child", undefined, 0],
    // A script: the sum of its statements; each may use what the one before created.
    ["CREATE TABLE s(a); INSERT INTO s VALUES (1), (2); UPDATE s SET a = 3 WHERE a = 99; SELECT 1; DELETE FROM s WHERE a = 1; -- done", undefined, 3],
    ["UPDATE t SET v = v WHERE id = 2;  -- a comment after one statement is no script", [], 1],
  ];

  for (const kind of KINDS) {
    it(`counts right after writes, reads, DDL, triggers and in scripts (${kind})`, async () => {
      const d = await memory(kind, SQL);
      d.exec("PRAGMA foreign_keys = ON");
      const counts = STEPS.map(([sql, params]) => d.run(sql, params).changes);
      assert.deepEqual(counts, STEPS.map(([, , n]) => n));
      assert.equal(d.all("SELECT count(*) AS n FROM log")[0]!["n"], 2 * 12, "the trigger ran");
      assert.equal(d.all("SELECT count(*) AS n FROM child")[0]!["n"], 1, "the cascade ran");
      // Cached statements keep counting right when they run again.
      assert.equal(d.run("SELECT * FROM t").changes, 0);
      assert.equal(d.run("UPDATE t SET v = 0 WHERE id > ?", [100]).changes, 0);
      assert.equal(d.run("UPDATE t SET v = v + 1 WHERE id <= ?", [3]).changes, 2);
    });

    it(`refuses parameters for a script, runs nothing for comments alone (${kind})`, async () => {
      const d = await memory(kind, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
      assert.throws(() => d.run("INSERT INTO t VALUES (?); INSERT INTO t VALUES (2)", [1]), RangeError);
      assert.deepEqual(d.all("SELECT * FROM t"), []);
      d.exec("");
      d.exec("  -- nothing /* here */");
      assert.throws(() => d.run("-- nothing"));
      // A failing statement stops a script; those before it stay done, as with sqlite3_exec.
      assert.throws(() => d.run("INSERT INTO t VALUES (1); INSERT INTO nope VALUES (1); INSERT INTO t VALUES (3)"), /no such table: nope/);
      assert.deepEqual(d.all("SELECT id FROM t").map((r) => r["id"]), [1]);
      // Splitting a script keeps its place past text SQLite sees differently (an unpaired surrogate).
      assert.equal(d.run("INSERT INTO t VALUES (length('\uD800x')); INSERT INTO t VALUES (5)").changes, 2);
      assert.deepEqual(d.all("SELECT id FROM t ORDER BY id").map((r) => r["id"]), [1, 2, 5]);
    });
  }

  it("installs the wasm conflict callback once, not once per apply", async () => {
    const SQL_T = "CREATE TABLE t(id INTEGER PRIMARY KEY, v)";
    const src = await memory("wasm", SQL_T);
    const cs = capture(src, (d) => d.run("INSERT INTO t VALUES (1, 'a')"));
    const dst = await memory("wasm", SQL_T + "; INSERT INTO t VALUES (1, 'z')");
    dst.applyChangeset(cs, () => RESOLUTION.OMIT); // a first apply may set up what it needs
    const Module = WebAssembly.Module;
    let compiled = 0;
    WebAssembly.Module = new Proxy(Module, {
      construct(target, args: [BufferSource]) {
        compiled++;
        return new target(...args);
      },
    });
    try {
      let seen = 0;
      for (let i = 0; i < 20; i++) dst.applyChangeset(cs, () => (seen++, RESOLUTION.OMIT));
      assert.equal(seen, 20);
    } finally {
      WebAssembly.Module = Module;
    }
    assert.equal(compiled, 0);
  });
});

describe("drivers bind and read every value alike", () => {
  const VALUES: unknown[] = [
    0, 1, -1, 2147483647, 2147483648, -2147483648, -2147483649, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER,
    2 ** 53, 0.1, -0, 1e-300, 9223372036854775807n, -9223372036854775808n, 9007199254740992n, 9007199254740993n,
    "", "a\u0000b", "ünïcödé 🍐", "x".repeat(10_000), "é".repeat(5_000) + "🍐".repeat(3_000),
    new Uint8Array(0), new Uint8Array([0]), new Uint8Array(100_000).map((_, i) => i % 251), null,
  ];

  it("store the same storage classes and bytes, read back the same JS values, capture the same changeset", async () => {
    const SQL = "CREATE TABLE v(id INTEGER PRIMARY KEY, x, i INTEGER, t TEXT, r REAL)";
    const out: Record<string, unknown> = {};
    for (const kind of KINDS) {
      const d = await memory(kind, SQL);
      const cs = capture(d, (x) => {
        // One long-lived statement, so the bind buffer grows and shrinks back to small values.
        VALUES.forEach((v, id) => x.run("INSERT INTO v VALUES (?, ?, ?, ?, ?)", [id, v, v, v, v] as never));
      });
      const rows = d.all("SELECT id, x, typeof(x) AS tx, hex(x) AS hx, i, typeof(i) AS ti, t, typeof(t) AS tt, r, typeof(r) AS tr FROM v ORDER BY id").map((r) => ({ ...r }));
      out[kind] = { cs, rows };
      // Read back as bound (a no-affinity column keeps the value); -0 is a safe integer: INTEGER 0.
      const expected = VALUES.map((v) => (Object.is(v, -0) ? 0 : typeof v === "bigint" && v >= -(2n ** 53n) + 1n && v <= 2n ** 53n - 1n ? Number(v) : v));
      assert.deepEqual(rows.map((r) => r["x"]), expected, kind);
    }
    assert.deepEqual(out["wasm"], out["node"]);
  });
});

describe("node file database", () => {
  it("persists across close and reopen, in WAL mode", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-drivers-"));
    try {
      const file = path.join(dir, "db.sqlite");
      const a = await openDriver("node", file);
      assert.equal(a.persistent, true);
      assert.equal(a.all("PRAGMA journal_mode")[0]!["journal_mode"], "wal");
      assert.equal(a.all("PRAGMA synchronous")[0]!["synchronous"], 2); // FULL
      a.exec(SCHEMA);
      workload(a);
      const before = dump(a);
      a.close();
      const b = await openDriver("node", file);
      assert.deepEqual(dump(b), before);
      b.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("driver selection", () => {
  it("defaults to node:sqlite on this Node", () => {
    assert.equal(defaultDriverKind(), "node");
  });

  it("refuses a wasm file path without a persistent VFS", async () => {
    await assert.rejects(openDriver("wasm", "/tmp/never-created.sqlite"), /persistent VFS/);
  });
});
