import { it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openReplica } from "../client/index.ts";
import { pullAll } from "./support/http.ts";
import { TODO_SCHEMA } from "./support/replicas.ts";
import { useRelay } from "./support/fixture.ts";

const relay = useRelay();

it("a writer killed after commit and before push loses nothing and pushes exactly once", async () => {
  const db = "crash";
  const path = join(relay.dir, "writer.db");
  const token = await relay.token("write", "writer", db);
  const child = spawn(process.execPath, [fileURLToPath(new URL("./support/crash-writer.ts", import.meta.url)), relay.url, db, token, path], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (b: Buffer) => b.toString().includes("committed") && resolve());
    child.on("exit", (code) => reject(new Error(`writer exited early (${code})`)));
  });
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  const reader = await relay.token("read", "x", db);
  assert.equal((await pullAll(relay.url, db, reader)).length, 0, "the writer never pushed");

  let clientId = "";
  for (let round = 0; round < 2; round++) {
    const r = await openReplica({ url: relay.url, db, token, path, schema: TODO_SCHEMA });
    clientId = r.status().clientId; // the database's, which the killed writer created
    assert.equal(r.status().pending, round === 0 ? 1 : 0);
    await r.sync();
    assert.deepEqual(await r.query("SELECT id, title FROM todo"), [{ id: "crash", title: "survives SIGKILL" }]);
    await r.close();
  }
  const log = await pullAll(relay.url, db, reader);
  assert.deepEqual(log.map((e: any) => [e.client, e.cseq]), [[clientId, 0], [clientId, 1]], "its schema version, then the write once");
});
