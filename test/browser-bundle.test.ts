/**
 * The bundling story, as a user lives it: an app that imports
 * "changeset-relay/browser" from an installed package (compiled dist/, the
 * package.json's exports), built by Vite with no configuration at all and by
 * esbuild with the README's recipe, then run in Chromium against the relay.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build as vite } from "vite";
import { build as esbuild } from "esbuild";
import type { Browser } from "playwright-core";
import { launch, screenshot, WAIT, watchPage } from "./support/browser.ts";
import { startRelay } from "./support/relay.ts";
import pkg from "../package.json" with { type: "json" };

const root = fileURLToPath(new URL("..", import.meta.url));
let dir: string;
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

/** The app: `extra` is what the bundler needs spelled out (nothing for Vite). */
function app(imports: string, extra: string): string {
  return `
import { openReplica } from "changeset-relay/browser";
${imports}
const out = document.getElementById("out");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
try {
  const replica = await openReplica({ url: location.origin, db: "bundled", token, ${extra}
    schema: ["CREATE TABLE IF NOT EXISTS note(id TEXT PRIMARY KEY, body TEXT)"] });
  await replica.exec("INSERT INTO note VALUES (?, ?)", ["1", "from a bundled app"]);
  await replica.sync();
  out.textContent = JSON.stringify({ rows: await replica.query("SELECT * FROM note"), status: replica.status() });
} catch (e) {
  out.textContent = JSON.stringify({ error: String(e && e.message || e) });
}
`;
}
const INDEX = `<!doctype html><html><body><pre id="out"></pre><script type="module" src="./main.js"></script></body></html>`;

/** Each bundler builds the app in `dir` into `out` and names the files that must come out of it. */
const BUNDLERS: Record<string, { build(dir: string, out: string): Promise<void>; expect: RegExp[] }> = {
  // Zero configuration: Vite follows `new Worker(new URL(...))` and `new URL("sqlite3.wasm", import.meta.url)`.
  vite: {
    async build(dir, out) {
      writeFileSync(join(dir, "index.html"), INDEX);
      writeFileSync(join(dir, "main.js"), app("", ""));
      await vite({ root: dir, configFile: false, logLevel: "silent", build: { outDir: out, emptyOutDir: true } });
    },
    expect: [/^assets\/sqlite3-.*\.wasm$/, /^assets\/worker-.*\.js$/],
  },
  // esbuild follows neither: the worker is a second entry point, the .wasm comes from the file loader.
  esbuild: {
    async build(dir, out) {
      writeFileSync(
        join(dir, "main.js"),
        app(
          `import wasm from "@sqlite.org/sqlite-wasm/sqlite3.wasm";`,
          `worker: new URL("./relay-worker.js", import.meta.url), wasmUrl: new URL(wasm, import.meta.url).href,`,
        ),
      );
      await esbuild({
        absWorkingDir: dir,
        entryPoints: { main: "./main.js", "relay-worker": "changeset-relay/browser/worker" },
        bundle: true,
        format: "esm",
        outdir: out,
        loader: { ".wasm": "file" },
        logLevel: "silent",
      });
      writeFileSync(join(out, "index.html"), INDEX);
    },
    expect: [/^sqlite3-.*\.wasm$/, /^relay-worker\.js$/],
  },
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "relay-bundle-"));
  installPackage(dir);
  browser = await launch();
});
after(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

for (const [name, bundler] of Object.entries(BUNDLERS)) {
  it(`an app on changeset-relay/browser built by ${name} runs in Chromium with OPFS`, async () => {
    const out = join(dir, `dist-${name}`);
    await bundler.build(dir, out);
    const files = readdirSync(out, { recursive: true }).map(String);
    for (const want of bundler.expect) assert.ok(files.some((f) => want.test(f)), `${want} among ${files.join(", ")}`);

    const relay = await startRelay({ assets: out });
    const page = await browser!.newPage();
    try {
      const log = watchPage(page, `${name}-app`);
      await page.goto(`${relay.url}/#token=${await relay.token("write", `${name}-app`, "bundled")}`);
      await page.waitForFunction(() => document.getElementById("out")!.textContent !== "", null, { timeout: WAIT });
      const result = JSON.parse((await page.textContent("#out"))!);
      assert.equal(result.error, undefined, `${result.error}\n${log.join("\n")}`);
      assert.deepEqual(result.rows, [{ id: "1", body: "from a bundled app" }]);
      assert.equal(result.status.storage, "opfs");
      assert.equal(result.status.pending, 0);
      assert.equal(result.status.cursor, 2, "seq 1 is the app's schema version, seq 2 its write");
      await screenshot(page, `bundle-${name}`);
    } finally {
      await page.close();
      await relay.close();
    }
  });
}
