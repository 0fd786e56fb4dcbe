/**
 * How durably each kind of local transaction commits on a persistent file.
 * A local write flushes before it returns (synchronous=FULL): the app was
 * told it happened. A sync step holds only what the relay gives again, so it
 * commits without a flush (NORMAL; client/step.ts localTx), and the
 * connection is back to FULL for the next write.
 */
import { after, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Driver } from "../client/drivers/types.ts";
import { useRelay } from "./support/fixture.ts";
import { closeReplicas, replica } from "./support/replicas.ts";

const relay = useRelay();
const dir = mkdtempSync(join(tmpdir(), "changeset-relay-durability-"));
after(async () => {
  await closeReplicas();
  rmSync(dir, { recursive: true, force: true });
});

it("local writes commit with synchronous=FULL, sync steps with NORMAL, and FULL is back after each step", async () => {
  const db = relay.db("durability");
  const a = await replica(relay, db, "dur-a", "node", { path: join(dir, "a.db") });
  const b = await replica(relay, db, "dur-b", "node");
  // The level each COMMIT ran under, by whom (the replica's connection, spied on).
  const d = (a as unknown as { d: Driver }).d;
  const commits: string[] = [];
  let level = "FULL";
  const exec = d.exec.bind(d);
  d.exec = (sql: string) => {
    const set = /^PRAGMA synchronous = (\w+)$/.exec(sql);
    if (set) level = set[1]!;
    exec(sql);
    if (sql === "COMMIT") commits.push(level);
  };
  await a.exec("INSERT INTO todo(id, title) VALUES ('1', 'local')");
  await b.exec("INSERT INTO todo(id, title) VALUES ('2', 'remote')");
  await b.sync();
  await a.sync(); // pushes 1 (the ack is a step), pulls 2 (a step)
  await a.exec("INSERT INTO todo(id, title) VALUES ('3', 'local again')");
  assert.equal(commits[0], "FULL", "the local write");
  assert.ok(commits.length >= 3, JSON.stringify(commits));
  assert.deepEqual(commits.slice(1, -1), commits.slice(1, -1).map(() => "NORMAL"), `the steps: ${JSON.stringify(commits)}`);
  assert.equal(commits.at(-1), "FULL", "the next local write");
  assert.deepEqual(await a.query("PRAGMA synchronous"), [{ synchronous: 2 }]);
  assert.deepEqual((await a.query<{ title: string }>("SELECT title FROM todo ORDER BY id")).map((r) => r.title), ["local", "remote", "local again"]);
});
