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
import { classify, guardTriggers, parseTrigger } from "../client/triggers.ts";
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
    fns.replaying = true;
    d.exec(write);
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

  it("reads what each statement writes: local only when every statement writes a local table", () => {
    const isLocal = (t: string) => t === "fts" || t === "my local";
    const writes = (sql: string) => classify(parseTrigger(sql), isLocal);
    assert.equal(writes("CREATE TRIGGER x AFTER INSERT ON t BEGIN INSERT INTO fts(rowid, v) VALUES (NEW.rowid, 'a;b'); END"), "local");
    assert.equal(writes(`CREATE TRIGGER x AFTER INSERT ON t BEGIN INSERT OR REPLACE INTO [my local] VALUES (1); UPDATE OR IGNORE "my local" SET v = 1; END`), "local");
    assert.equal(writes("CREATE TRIGGER x AFTER INSERT ON t BEGIN WITH c(n) AS (SELECT 1) INSERT INTO fts SELECT n FROM c; DELETE FROM fts; REPLACE INTO fts VALUES (1); END"), "local");
    assert.equal(writes("CREATE TRIGGER x AFTER INSERT ON t BEGIN INSERT INTO fts VALUES (1); SELECT RAISE(ABORT, 'no'); END"), "mixed", "a check beside a local write");
    assert.equal(writes("CREATE TRIGGER x BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, 'no'); END"), "replicated");
    assert.equal(writes("CREATE TRIGGER x AFTER DELETE ON t BEGIN UPDATE audit SET n = n - 1; END"), "replicated");
  });
});

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
