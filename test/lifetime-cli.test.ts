/**
 * The CLI's compact, export and status (issue 15) against the real relay:
 * export at several seqs equals the state a replica had at that seq; an
 * export older than the retained log is refused with a clear message.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { promisify } from "node:util";
import { openReplica, type Replica } from "../client/index.ts";
import { useRelay } from "./support/fixture.ts";
import { TEST_SECRET } from "./support/relay.ts";

const relay = useRelay({ bindings: { RETAIN_ENTRIES: "3", RETAIN_SECONDS: "0" } });
const run = promisify(execFile);
const SCHEMA = ["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, n REAL)"];

const opened: Replica[] = [];
after(() => Promise.all(opened.map((r) => r.close())));

async function cli(db: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return cliWith({ ...process.env, RELAY_TOKEN: await relay.token("admin", "ops", db) }, db, ...args);
}

async function cliWith(env: NodeJS.ProcessEnv, db: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ["bin/changeset-relay.js", ...args, "--url", relay.url, "--db", db], { env });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

function rowsOf(file: string): unknown[] {
  const d = new DatabaseSync(file);
  try {
    const own = d.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE name LIKE '\\_relay\\_%' ESCAPE '\\'").get() as { n: number };
    assert.equal(own.n, 0, "a plain SQLite database: no replica tables");
    return d.prepare("SELECT * FROM todo ORDER BY id").all().map((r) => ({ ...r }));
  } finally {
    d.close();
  }
}

describe("changeset-relay compact / export / status", () => {
  it("export at several seqs equals the state at each; compact trims; an export older than retained is refused", async () => {
    const db = relay.db("cli");
    const w = await openReplica({ url: relay.url, db, token: await relay.token("write", "w", db), clientId: "w", driver: "node", schema: SCHEMA });
    opened.push(w);
    const states = new Map<number, unknown[]>();
    for (let i = 0; i < 12; i++) {
      await w.exec("INSERT INTO todo VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET title = excluded.title, n = excluded.n", [`t${i % 4}`, `v${i}`, i / 2]);
      if (i % 5 === 4) await w.exec("DELETE FROM todo WHERE id = 't1'");
      await w.sync();
      states.set(w.status().cursor, (await w.query("SELECT * FROM todo ORDER BY id")).map((r) => ({ ...r })));
    }
    const seqs = [...states.keys()];
    for (const seq of [seqs[0]!, seqs[5]!, seqs.at(-1)!]) {
      const out = join(relay.dir, `${db}-${seq}.db`);
      const res = await cli(db, "export", "--at", String(seq), "--out", out);
      assert.equal(res.code, 0, res.stderr);
      assert.deepEqual(rowsOf(out), states.get(seq), `the state at seq ${seq}`);
    }

    const compacted = await cli(db, "compact");
    assert.equal(compacted.code, 0, compacted.stderr);
    const head = w.status().cursor;
    assert.match(compacted.stdout, new RegExp(`snapshot at seq ${head} .* trimmed through seq 0`), "RETAIN_ENTRIES=3: the snapshot at the head covers nothing outside the window yet");
    // Three more entries: now the snapshot is outside the window.
    for (let i = 0; i < 3; i++) await w.exec("INSERT INTO todo VALUES (?, 'late', 0)", [`late${i}`]);
    await w.sync();
    const trimmed = await cli(db, "compact");
    assert.match(trimmed.stdout, new RegExp(`trimmed through seq ${head} \\(\\d+ entries`));

    const status = await cli(db, "status");
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`head ${head + 3}, oldest retained seq ${head + 1}`));
    assert.match(status.stdout, /entries 3 /);
    assert.match(status.stdout, new RegExp(`snapshot seq ${head} v1 \\d+ bytes sha256 [0-9a-f]{64} agreeing subs 1`));

    const old = await cli(db, "export", "--at", String(seqs[5]!), "--out", join(relay.dir, "old.db"));
    assert.equal(old.code, 1);
    assert.match(old.stderr, new RegExp(`seq ${seqs[5]} is older than what the relay retains: entries through seq ${head} were compacted`));
    const out = join(relay.dir, `${db}-after.db`);
    const late = await cli(db, "export", "--at", String(head + 1), "--out", out);
    assert.equal(late.code, 0, late.stderr);
    assert.deepEqual(rowsOf(out).length, states.get(head)!.length + 1, "snapshot plus one entry of the tail");
  });

  it("without RELAY_TOKEN it mints its own admin tokens from the secret (a token function), which the relay's jose verification takes", async () => {
    const db = relay.db("cli-minted");
    const w = await openReplica({ url: relay.url, db, token: await relay.token("write", "w", db), driver: "node", schema: SCHEMA });
    opened.push(w);
    await w.exec("INSERT INTO todo VALUES ('a', 'x', 1)");
    await w.sync();
    const env: NodeJS.ProcessEnv = { ...process.env, RELAY_SECRET: TEST_SECRET };
    delete env.RELAY_TOKEN;
    const compacted = await cliWith(env, db, "compact");
    assert.equal(compacted.code, 0, compacted.stderr);
    const status = await cliWith(env, db, "status");
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`snapshot seq ${w.status().cursor} v1 .* agreeing subs 1`));
    const wrong = await cliWith({ ...env, RELAY_SECRET: "not-the-relay-secret-at-all-0123456789" }, db, "status");
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /unauthorized|signature/i);
  });
});
