/**
 * The bundling story, as a user lives it: an app that imports
 * "changeset-relay/browser" from an installed package (compiled dist/, the
 * package.json's exports), built by Vite with no configuration at all, then
 * run in Chromium against the relay. Vite must find the database worker and
 * sqlite3.wasm by itself (`new Worker(new URL(...))`, `new URL("sqlite3.wasm", import.meta.url)`).
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "vite";
import type { Browser } from "playwright-core";
import { launch, screenshot, WAIT, watchPage } from "./support/browser.ts";
import { startRelay, type TestRelay } from "./support/relay.ts";
import pkg from "../package.json" with { type: "json" };

const root = fileURLToPath(new URL("..", import.meta.url));
let dir: string;
let relay: TestRelay | undefined;
let browser: Browser | undefined;

/** node_modules/changeset-relay as `npm install` would lay it out: package.json + dist, dependencies beside it. */
function installPackage(into: string): void {
  const modules = join(into, "node_modules");
  const self = join(modules, "changeset-relay");
  mkdirSync(self, { recursive: true });
  cpSync(join(root, "package.json"), join(self, "package.json"));
  const tsc = join(root, "node_modules/typescript/bin/tsc");
  try {
    execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json"), "--outDir", join(self, "dist")], { stdio: "pipe" });
  } catch (e) {
    // tsc emits despite type errors; those are `npm run typecheck`'s to report, a missing build is ours.
    if (!existsSync(join(self, "dist/client/browser/index.js"))) throw e;
  }
  for (const dep of Object.keys(pkg.dependencies)) {
    mkdirSync(join(modules, dep, ".."), { recursive: true });
    symlinkSync(join(root, "node_modules", dep), join(modules, dep), "dir");
  }
}

const APP = `
import { openReplica } from "changeset-relay/browser";
const out = document.getElementById("out");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
try {
  const replica = await openReplica({ url: location.origin, db: "bundled", token,
    schema: ["CREATE TABLE IF NOT EXISTS note(id TEXT PRIMARY KEY, body TEXT)"] });
  await replica.exec("INSERT INTO note VALUES (?, ?)", ["1", "from a Vite build"]);
  await replica.sync();
  out.textContent = JSON.stringify({ rows: await replica.query("SELECT * FROM note"), status: replica.status() });
} catch (e) {
  out.textContent = JSON.stringify({ error: String(e && e.message || e) });
}
`;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "relay-vite-"));
  installPackage(dir);
  writeFileSync(join(dir, "index.html"), `<!doctype html><html><body><pre id="out"></pre><script type="module" src="./main.js"></script></body></html>`);
  writeFileSync(join(dir, "main.js"), APP);
});
after(async () => {
  await browser?.close();
  await relay?.close();
  rmSync(dir, { recursive: true, force: true });
});

it("a zero-config Vite build of an app on changeset-relay/browser runs in Chromium with OPFS", async () => {
  const outDir = join(dir, "dist");
  await build({ root: dir, configFile: false, logLevel: "silent", build: { outDir, emptyOutDir: true } });
  const assets = readdirSync(join(outDir, "assets"));
  assert.ok(assets.some((f) => /^sqlite3-.*\.wasm$/.test(f)), `sqlite3.wasm emitted: ${assets.join(", ")}`);
  assert.ok(assets.some((f) => /^worker-.*\.js$/.test(f)), `database worker emitted: ${assets.join(", ")}`);

  relay = await startRelay({ assets: outDir });
  browser = await launch();
  const page = await browser.newPage();
  const log = watchPage(page, "vite-app");
  await page.goto(`${relay.url}/#token=${await relay.token("write", "vite-app", "bundled")}`);
  await page.waitForFunction(() => document.getElementById("out")!.textContent !== "", null, { timeout: WAIT });
  const result = JSON.parse((await page.textContent("#out"))!);
  assert.equal(result.error, undefined, `${result.error}\n${log.join("\n")}`);
  assert.deepEqual(result.rows, [{ id: "1", body: "from a Vite build" }]);
  assert.equal(result.status.storage, "opfs");
  assert.equal(result.status.pending, 0);
  assert.equal(result.status.cursor, 1);
  await screenshot(page, "vite-app");
});
