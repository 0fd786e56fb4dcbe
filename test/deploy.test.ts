/**
 * The repository's wrangler.toml from a fresh checkout: only the files git
 * has (no demo/dist, no dist/, no .wrangler), with the installed
 * node_modules beside them. `wrangler dev` and `wrangler deploy` must build
 * the demo themselves. `wrangler deploy` cannot reach Cloudflare from here, but
 * its dry run checks what would ship: the Worker bundles, the Durable Object
 * binding and the demo assets are picked up.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort } from "../scripts/local-relay.ts";
import { childEnv, startServer } from "./support/server-process.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const wrangler = createRequire(import.meta.url).resolve("wrangler/bin/wrangler.js");
let checkout: string;

before(() => {
  checkout = mkdtempSync(join(tmpdir(), "checkout-"));
  // What a clone has: tracked files, plus new ones not yet committed (this working tree's state), minus ignored ones.
  const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: root, encoding: "utf8" });
  for (const file of files.split("\0").filter((f) => f && existsSync(join(root, f)))) {
    mkdirSync(dirname(join(checkout, file)), { recursive: true });
    cpSync(join(root, file), join(checkout, file));
  }
  symlinkSync(join(root, "node_modules"), join(checkout, "node_modules"), "dir");
});
after(() => rmSync(checkout, { recursive: true, force: true }));

it("wrangler dev in a fresh checkout builds the demo and serves the relay and the demo", async () => {
  assert.equal(existsSync(join(checkout, "demo/dist")), false, "a fresh checkout has no demo/dist");
  const port = await freePort();
  const persist = mkdtempSync(join(tmpdir(), "state-"));
  const server = await startServer(process.execPath, [wrangler, "dev", "--local", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", persist], checkout, port);
  try {
    const health = (await (await fetch(`${server.url}/v1/health`)).json()) as { ok: boolean };
    assert.equal(health.ok, true);
    const page = await fetch(`${server.url}/`);
    assert.equal(page.status, 200, server.output());
    assert.match(await page.text(), /<script[^>]+app\.js/);
  } finally {
    await server.stop();
    rmSync(persist, { recursive: true, force: true });
  }
});

it("wrangler deploy --dry-run in a fresh checkout bundles the relay with its Durable Object and the demo", async () => {
  rmSync(join(checkout, "demo/dist"), { recursive: true, force: true });
  const out = mkdtempSync(join(tmpdir(), "deploy-"));
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [wrangler, "deploy", "--dry-run", "--outdir", out], {
      cwd: checkout,
      env: childEnv(),
      timeout: 180_000,
    });
    assert.match(stdout, /env\.LOG \(ChangesetLog\)\s+Durable Object/);
    assert.match(stdout, /files from the assets directory/);
    assert.ok(existsSync(join(checkout, "demo/dist/index.html")), "the [build] command built the demo");
    const bundle = readFileSync(join(out, "index.js"), "utf8");
    assert.ok(/ChangesetLog = class extends DurableObject|class ChangesetLog extends/.test(bundle), "the Durable Object class is in the bundle");
    assert.ok(/export\s*\{[^}]*ChangesetLog/.test(bundle), "and exported");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
