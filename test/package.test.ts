/**
 * The published package as an app developer gets it: `npm pack`, the tarball
 * installed into an empty app (from the npm cache where it can), then the
 * app's own `npx changeset-relay dev` relay, tokens from `npx changeset-relay
 * token`, and two replicas on "changeset-relay/client" syncing through it.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { unstable_readConfig } from "wrangler";
import { relayConfig } from "../bin/relay.js";
import { verifyToken } from "../protocol/token.ts";
import { freePort } from "../scripts/local-relay.ts";
import { childEnv, startServer } from "./support/server-process.ts";
import wranglerPkg from "wrangler/package.json" with { type: "json" };

const root = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);
let dir: string;
let app: string;

/** `npx changeset-relay ...` in the app; resolves its stdout. */
async function cli(...args: string[]): Promise<string> {
  return (await run("npx", ["changeset-relay", ...args], { cwd: app, env: childEnv(), timeout: 180_000 })).stdout;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "package-"));
  app = join(dir, "app");
  mkdirSync(app);
  await run("npm", ["pack", "--pack-destination", dir], { cwd: root, env: childEnv(), timeout: 300_000 });
  const tarball = join(dir, readdirSync(dir).find((f) => f.endsWith(".tgz"))!);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  // wrangler is an optional peer: only an app that runs a relay installs it. Its version is the repo's, already in the npm cache.
  await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", tarball, `wrangler@${wranglerPkg.version}`], { cwd: app, env: childEnv(), timeout: 300_000 });
});
after(() => rmSync(dir, { recursive: true, force: true }));

it("the installed package is ready to use: compiled dist/, no build step at install", () => {
  const installed = join(app, "node_modules/changeset-relay");
  const pkg = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as { scripts?: Record<string, string> };
  for (const hook of ["prepare", "preinstall", "install", "postinstall"]) assert.equal(pkg.scripts?.[hook], undefined, `no ${hook} script`);
  for (const file of ["dist/client/index.js", "dist/client/browser/index.js", "dist/protocol/index.js", "worker/index.ts", "bin/relay.js"]) {
    assert.ok(existsSync(join(installed, file)), file);
  }
});

it("the CLI's relay configuration is the repository's wrangler.toml without the demo", () => {
  const repo = unstable_readConfig({ config: join(root, "wrangler.toml") });
  assert.deepEqual(relayConfig("changeset-relay"), {
    name: repo.name,
    main: repo.main,
    compatibility_date: repo.compatibility_date,
    compatibility_flags: repo.compatibility_flags,
    durable_objects: repo.durable_objects,
    migrations: repo.migrations,
  });
});

it("npx changeset-relay dev in the app serves a relay that syncs two replicas on changeset-relay/client", async () => {
  const port = await freePort();
  const server = await startServer("npx", ["changeset-relay", "dev", "--port", String(port)], app, port);
  try {
    const secret = /^RELAY_SECRET=(dev-[0-9a-f]{48})$/m.exec(readFileSync(join(app, ".dev.vars"), "utf8"))?.[1];
    assert.ok(secret, "a development secret was created in .dev.vars");
    assert.ok(existsSync(join(app, ".relay/v3")), "data persisted in .relay");
    const [tokenA, tokenB] = [await cli("token", "--db", "notes", "--role", "write", "--sub", "a"), await cli("token", "--db", "notes", "--role", "write", "--sub", "b")];
    const claims = await verifyToken(tokenA.trim(), secret);
    assert.equal(claims.exp! - claims.iat!, 3600, "tokens last an hour unless --ttl says otherwise");
    writeFileSync(
      join(app, "sync.js"),
      `import { openReplica } from "changeset-relay/client";
const [url, tokenA, tokenB] = process.argv.slice(2);
const schema = ["CREATE TABLE IF NOT EXISTS note(id TEXT PRIMARY KEY, body TEXT)"];
const a = await openReplica({ url, db: "notes", token: tokenA, schema });
const b = await openReplica({ url, db: "notes", token: tokenB, schema });
await a.exec("INSERT INTO note VALUES ('1', 'from a')");
await b.exec("INSERT INTO note VALUES ('2', 'from b')");
await a.sync();
await b.sync();
await a.sync();
const [rowsA, rowsB] = [await a.query("SELECT * FROM note ORDER BY id"), await b.query("SELECT * FROM note ORDER BY id")];
await Promise.all([a.close(), b.close()]);
console.log(JSON.stringify({ rowsA, rowsB }));
`,
    );
    const { stdout } = await run(process.execPath, ["sync.js", server.url, tokenA.trim(), tokenB.trim()], { cwd: app, timeout: 60_000 });
    const both = [
      { id: "1", body: "from a" },
      { id: "2", body: "from b" },
    ];
    assert.deepEqual(JSON.parse(stdout), { rowsA: both, rowsB: both }, server.output());
  } finally {
    await server.stop();
  }
});

it("npx changeset-relay deploy hands wrangler the relay without the demo", async () => {
  const out = join(dir, "deploy");
  const stdout = await cli("deploy", "--name", "my-relay", "--", "--dry-run", "--outdir", out);
  assert.match(stdout, /env\.LOG \(ChangesetLog\)\s+Durable Object/);
  assert.doesNotMatch(stdout, /assets directory/);
  assert.ok(/export\s*\{[^}]*ChangesetLog/.test(readFileSync(join(out, "index.js"), "utf8")), "the Durable Object class is exported from the bundle");
});
