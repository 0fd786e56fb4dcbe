import { it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/**
 * `wrangler deploy` cannot reach Cloudflare from here, but its dry run checks
 * what would ship: wrangler.toml parses, the Worker bundles, the Durable
 * Object binding and the demo assets are picked up.
 */
it("wrangler deploy --dry-run bundles the relay with its Durable Object and assets", async () => {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const out = mkdtempSync(join(tmpdir(), "deploy-"));
  try {
    const wrangler = createRequire(import.meta.url).resolve("wrangler/bin/wrangler.js");
    const { stdout } = await promisify(execFile)(process.execPath, [wrangler, "deploy", "--dry-run", "--outdir", out], {
      cwd: root,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
      timeout: 120_000,
    });
    assert.match(stdout, /env\.LOG \(ChangesetLog\)\s+Durable Object/);
    assert.match(stdout, /files from the assets directory/);
    const bundle = readFileSync(join(out, "index.js"), "utf8");
    assert.ok(/ChangesetLog = class extends DurableObject|class ChangesetLog extends/.test(bundle), "the Durable Object class is in the bundle");
    assert.ok(/export\s*\{[^}]*ChangesetLog/.test(bundle), "and exported");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
