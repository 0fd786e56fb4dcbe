/**
 * The parts under issue 14's features, without a relay: the trigger guard
 * (what it reads, how it rewrites) and the drivers' session(tables) and
 * function(). The features themselves: test/sqlite-features.test.ts.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { openDriver } from "../client/drivers/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { RelayFunctions } from "../client/functions.ts";
import * as store from "../client/store.ts";
import { guardTriggers } from "../client/triggers.ts";
import { RelayError } from "../client/errors.ts";
import { changesetTables } from "../protocol/changeset.ts";

describe("the trigger guard", () => {
  async function fired(create: string, write: string): Promise<{ local: number; replay: number; sql: string }> {
    const d = await openDriver("node", ":memory:");
    const fns = RelayFunctions.install((store.migrate(d), d));
    d.exec(`CREATE TABLE t("begin" INTEGER, "end" INTEGER, a, b, c); CREATE TABLE "log ""x"""(n); ${create}`);
    guardTriggers(d, () => false);
    const count = () => d.all(`SELECT count(*) AS n FROM "log ""x"""`)[0]!.n as number;
    d.exec(write);
    const local = count();
    fns.replay(() => d.exec(write));
    const replay = count() - local;
    const sql = d.all("SELECT sql FROM sqlite_schema WHERE type = 'trigger'")[0]!.sql as string;
    d.close();
    return { local, replay, sql };
  }

  it("keeps the WHEN clause's meaning (OR, CASE ... END, a comment at its end) and stops the trigger on replay", async () => {
    const body = `BEGIN INSERT INTO "log ""x"""(n) VALUES (NEW."begin"); END`;
    for (const [when, write, n] of [
      ["", "INSERT INTO t(a) VALUES (1)", 1],
      ["WHEN NEW.a = 1 OR NEW.b = 2", "INSERT INTO t(a, b) VALUES (0, 2)", 1],
      ["WHEN NEW.a = 1 OR NEW.b = 2", "INSERT INTO t(a, b) VALUES (0, 0)", 0],
      ["WHEN CASE WHEN NEW.a THEN NEW.\"end\" ELSE 0 END -- a comment\n", "INSERT INTO t(a, \"end\") VALUES (1, 1)", 1],
      ["WHEN (NEW.c IN (SELECT 1 UNION SELECT 2)) /* begin */", "INSERT INTO t(c) VALUES (2)", 1],
    ] as const) {
      const r = await fired(`CREATE TRIGGER "on" AFTER INSERT ON "t" FOR EACH ROW ${when} ${body}`, write);
      assert.deepEqual([r.local, r.replay], [n, 0], `${when}: ${r.sql}`);
    }
  });

});

for (const kind of ["node", "wasm"] as DriverKind[]) {
  describe(`${kind} driver: what a trigger writes, as SQLite reports it`, () => {
    const isLocal = (t: string) => ["loc", "my local"].includes(t.toLowerCase());
    /** The triggers guardTriggers guarded, or the error it threw. */
    async function guarded(schema: string): Promise<string[] | RelayError> {
      const d = await openDriver(kind, ":memory:");
      RelayFunctions.install((store.migrate(d), d));
      d.exec(`CREATE TABLE t(id PRIMARY KEY, a, b, g AS (a + 1)); CREATE TABLE audit(n); CREATE TABLE loc(n PRIMARY KEY, m); CREATE TABLE "my local"(v); CREATE VIEW v AS SELECT n FROM loc; ${schema}`);
      try {
        guardTriggers(d, isLocal);
        return d.all("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND sql LIKE '%relay_replaying%' ORDER BY name").map((r) => r.name as string);
      } catch (e) {
        if (e instanceof RelayError) return e;
        throw e;
      } finally {
        d.close();
      }
    }

    it("local only when it writes local tables (or views) only: literals, comments, upserts, CTEs, nested and INSTEAD OF triggers", async () => {
      const r = await guarded(`
        CREATE TRIGGER lit AFTER INSERT ON t BEGIN INSERT INTO loc(n) VALUES ('; INSERT INTO audit VALUES (1)') /* ; DELETE FROM audit; */; END;
        CREATE TRIGGER upsert AFTER UPDATE OF b ON t BEGIN INSERT INTO loc VALUES (NEW.id, 1) ON CONFLICT(n) DO UPDATE SET m = m + 1; END;
        CREATE TRIGGER cte AFTER DELETE ON t BEGIN INSERT INTO loc(n) WITH c(x) AS (SELECT 1) SELECT x FROM c; DELETE FROM [my local]; REPLACE INTO "my local" VALUES (1); END;
        CREATE TRIGGER into_view AFTER UPDATE OF a ON t BEGIN INSERT INTO v VALUES (NEW.a); END;
        CREATE TRIGGER instead INSTEAD OF INSERT ON v BEGIN INSERT OR IGNORE INTO loc(n) VALUES (NEW.n); END;
        CREATE TRIGGER nested AFTER INSERT ON loc BEGIN INSERT INTO audit VALUES (NEW.n); END;
        CREATE TRIGGER audit_upd AFTER INSERT ON audit BEGIN UPDATE OR IGNORE t SET a = 1 WHERE 0; END;
        CREATE TRIGGER check_only BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no') WHERE NEW.n IS NULL; END;
        CREATE TRIGGER generated_only AFTER UPDATE OF g ON t BEGIN INSERT INTO loc(n) VALUES (1); END;`);
      // into_view: the view stores nothing, and the INSTEAD OF trigger it fires keeps a local table (the tokenizer guarded it).
      // generated_only: no probe fires it, so it is guarded, the safe side.
      assert.deepEqual(r, ["audit_upd", "check_only", "generated_only", "nested"]);
    });

    it("mixed: local and replicated writes, or a check beside a local write; a view write beside a replicated one", async () => {
      for (const body of [
        "INSERT INTO loc(n) VALUES (1); UPDATE audit SET n = n - 1;",
        "INSERT INTO loc(n) VALUES (1); SELECT RAISE(ABORT, 'no') WHERE NEW.a IS NULL;",
        "INSERT INTO v VALUES (NEW.a); INSERT INTO audit VALUES (1);",
      ]) {
        const r = await guarded(`CREATE TRIGGER instead INSTEAD OF INSERT ON v BEGIN INSERT INTO loc(n) VALUES (NEW.n); END; CREATE TRIGGER x AFTER INSERT ON t BEGIN ${body} END`);
        assert.ok(r instanceof RelayError && r.code === "mixed_trigger", `${body}: ${String(r)}`);
      }
    });

    it("a trigger SQLite cannot compile (its table dropped) is a clear error at open, not a guess", async () => {
      const r = await guarded("CREATE TABLE gone(x); CREATE TRIGGER b AFTER INSERT ON t BEGIN INSERT INTO gone VALUES (1); END; DROP TABLE gone");
      assert.ok(r instanceof RelayError && r.code === "bad_request" && /no such table: main.gone/.test(r.message), String(r));
    });

    it("writesOf reports a statement's writes and each trigger's, nested ones by their own name, without running it", async () => {
      const d = await openDriver(kind, ":memory:");
      d.exec(`CREATE TABLE t(id PRIMARY KEY, a); CREATE TABLE u(id PRIMARY KEY, v); CREATE TABLE w(x);
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO u VALUES (NEW.id, 'INSERT INTO w') ON CONFLICT(id) DO UPDATE SET v = excluded.v; END;
        CREATE TRIGGER u_upd AFTER UPDATE OF v ON u BEGIN DELETE FROM w; END`);
      const writes = d.writesOf("INSERT INTO t VALUES (1, 2)")!.map((w) => `${w.trigger}:${w.table}`);
      assert.deepEqual([...new Set(writes)], ["null:t", "t_ins:u", "u_upd:w"]);
      assert.equal(d.all("SELECT count(*) AS n FROM t")[0]!.n, 0, "prepared, never run");
      d.close();
    });
  });
}

for (const kind of ["node", "wasm"] as DriverKind[]) {
  describe(`${kind} driver additions`, () => {
    it("session(tables) records only those tables; function() returns values as all() does and reports throws", async () => {
      const d = await openDriver(kind, ":memory:");
      d.exec("CREATE TABLE a(id PRIMARY KEY, v); CREATE TABLE b(id PRIMARY KEY, v); CREATE TABLE c(k, v, PRIMARY KEY(k, v)) WITHOUT ROWID");
      const s = d.session(["a", "c"]);
      d.exec("INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1); INSERT INTO c VALUES (1, 2)");
      assert.deepEqual(changesetTables(s.changeset()).map((t) => t.name).sort(), ["a", "c"]);
      s.close();
      const none = d.session([]);
      d.exec("INSERT INTO a VALUES (2, 2)");
      assert.equal(none.changeset().byteLength, 0);
      none.close();
      d.function("echo", (...args) => args[0] ?? null);
      d.function("boom", () => {
        throw new Error("no way");
      });
      const row = d.all("SELECT echo(1) AS i, typeof(echo(1)) AS ti, echo(1.5) AS r, echo('x') AS t, echo(x'01') AS b, echo(9007199254740993) AS big, echo() AS n")[0]!;
      assert.deepEqual({ ...row }, { i: 1, ti: "integer", r: 1.5, t: "x", b: new Uint8Array([1]), big: 9007199254740993n, n: null });
      assert.throws(() => d.all("SELECT boom()"), /no way/);
      d.close();
    });
  });
}
