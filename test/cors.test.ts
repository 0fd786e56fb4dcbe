/**
 * Cross-origin use: ALLOWED_ORIGINS on the relay answers preflights, exposes
 * the headers clients read, and checks a WebSocket's Origin; a browser app
 * served from another origin (two origins on loopback) syncs over HTTP and
 * live, with its token function running in the page.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type { Browser } from "playwright-core";
import { freePort } from "../scripts/local-relay.ts";
import { openReplica, type Replica } from "../client/index.ts";
import { launch, WAIT, watchPage } from "./support/browser.ts";
import { useRelay } from "./support/fixture.ts";
import { until } from "./support/wait.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const appPort = await freePort();
const APP = `http://localhost:${appPort}`;
const relay = useRelay({ bindings: { ALLOWED_ORIGINS: `https://other.example, ${APP}` } });

describe("CORS on the HTTP routes", () => {
  it("a preflight from an allowed origin is answered; others get no CORS headers", async () => {
    const preflight = (origin: string) =>
      fetch(`${relay.url}/v1/db/x/push`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type, content-encoding" },
      });
    const ok = await preflight(APP);
    assert.equal(ok.status, 204);
    assert.equal(ok.headers.get("access-control-allow-origin"), APP);
    assert.match(ok.headers.get("access-control-allow-methods")!, /POST/);
    for (const h of ["authorization", "content-type", "content-encoding"]) assert.match(ok.headers.get("access-control-allow-headers")!, new RegExp(h));
    const no = await preflight("http://evil.example");
    assert.equal(no.headers.get("access-control-allow-origin"), null);
  });

  it("a snapshot part upload (PUT) from an allowed origin passes its preflight", async () => {
    const res = await fetch(`${relay.url}/v1/db/x/snapshots/1/parts/0`, {
      method: "OPTIONS",
      headers: { origin: APP, "access-control-request-method": "PUT", "access-control-request-headers": "authorization, content-type" },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("access-control-allow-origin"), APP);
    assert.match(res.headers.get("access-control-allow-methods")!, /PUT/);
  });

  it("responses, errors included, carry the origin and expose Retry-After", async () => {
    for (const path of ["/v1/health", "/v1/db/x/pull", "/v1/db/x/snapshot"]) {
      const res = await fetch(`${relay.url}${path}`, { headers: { origin: APP } });
      assert.equal(res.headers.get("access-control-allow-origin"), APP, path);
      assert.match(res.headers.get("access-control-expose-headers")!, /retry-after/i, path);
      await res.arrayBuffer();
    }
  });

  it("a WebSocket from an origin not listed is refused (403); a listed one and a non-browser client connect", async () => {
    const token = await relay.token("read", "r", "x");
    const url = `${relay.url}/v1/db/x/ws?token=${token}`;
    // A handshake as a browser on another page sends it (fetch may not set Upgrade).
    const evil = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(url, { headers: { upgrade: "websocket", connection: "Upgrade", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", origin: "http://evil.example" } });
      req.on("response", (res) => {
        let body = "";
        res.on("data", (d) => (body += d)).on("end", () => resolve({ status: res.statusCode!, body }));
      });
      req.on("upgrade", (_res, socket) => (socket.destroy(), resolve({ status: 101, body: "" })));
      req.on("error", reject);
      req.end();
    });
    assert.equal(evil.status, 403);
    assert.equal(JSON.parse(evil.body).error.code, "forbidden");
    const ws = new WebSocket(url.replace("http", "ws"));
    await new Promise((res, rej) => ((ws.onopen = res), (ws.onerror = rej)));
    ws.close();
  });
});

describe("a browser app on another origin", () => {
  let dir: string;
  let server: Server;
  let browser: Browser | undefined;
  const replicas: Replica[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "relay-cors-"));
    writeFileSync(
      join(dir, "main.ts"),
      `
import { openReplica } from ${JSON.stringify(`${root}client/browser/index.ts`)};
import wasm from "@sqlite.org/sqlite-wasm/sqlite3.wasm";
const params = new URLSearchParams(location.hash.slice(1));
const out = document.getElementById("out")!;
try {
  const replica = await openReplica({
    url: params.get("relay")!, db: params.get("db")!, live: true,
    // Runs here in the page, asked by the database worker.
    token: () => (window as any).mintToken(),
    worker: new URL("./relay-worker.js", import.meta.url), wasmUrl: new URL(wasm, import.meta.url).href,
    schema: ["CREATE TABLE IF NOT EXISTS note(id TEXT PRIMARY KEY, body TEXT)"],
  });
  (window as any).replica = replica;
  await replica.exec("INSERT INTO note VALUES ('page', 'from the page')");
  await replica.sync();
  out.textContent = JSON.stringify({ status: replica.status() });
} catch (e) {
  out.textContent = JSON.stringify({ error: String((e as Error)?.message ?? e) });
}
`,
    );
    await build({
      absWorkingDir: root,
      nodePaths: [join(root, "node_modules")], // the app lives in a temp folder
      entryPoints: { main: join(dir, "main.ts"), "relay-worker": `${root}client/browser/worker.ts` },
      bundle: true,
      format: "esm",
      platform: "browser",
      target: "es2022",
      outdir: join(dir, "out"),
      loader: { ".wasm": "file" },
      logLevel: "silent",
    });
    writeFileSync(join(dir, "out/index.html"), `<!doctype html><html><body><pre id="out"></pre><script type="module" src="./main.js"></script></body></html>`);
    const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };
    server = createServer((req, res) => {
      try {
        const file = join(dir, "out", new URL(req.url!, APP).pathname.replace(/^\/$/, "/index.html"));
        res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
      } catch {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(appPort, "localhost", r));
    browser = await launch();
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.close()));
    await browser?.close();
    if (server) await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it("syncs over HTTP and live from http://localhost:PORT with a relay on http://127.0.0.1:PORT", async () => {
    const db = relay.db("cross-origin");
    const page = await browser!.newPage();
    const log = watchPage(page, "cross-origin");
    let minted = 0;
    // Short-lived tokens: the page's function is asked again while the test runs.
    await page.exposeFunction("mintToken", () => (minted++, relay.token("write", "page-user", db, 3)));
    await page.goto(`${APP}/#relay=${encodeURIComponent(relay.url)}&db=${db}`);
    assert.notEqual(new URL(page.url()).origin, new URL(relay.url).origin);
    await page.waitForFunction(() => document.getElementById("out")!.textContent !== "", null, { timeout: WAIT });
    const result = JSON.parse((await page.textContent("#out"))!);
    assert.equal(result.error, undefined, `${result.error}\n${log.join("\n")}`);
    assert.equal(result.status.pending, 0);

    const N = await openReplica({ url: relay.url, db, token: await relay.token("write", "node-user", db), live: true, schema: ["CREATE TABLE IF NOT EXISTS note(id TEXT PRIMARY KEY, body TEXT)"] });
    replicas.push(N);
    await until(async () => (await N.query("SELECT 1 FROM note WHERE id = 'page'")).length === 1, "the page's write reached Node");
    const pageSees = (id: string) => page.evaluate(async (id) => (await (window as any).replica.query("SELECT 1 FROM note WHERE id = ?", [id])).length === 1, id);
    await N.exec("INSERT INTO note VALUES ('node-1', 'from node')");
    await until(() => pageSees("node-1"), "Node's write reached the page over the live socket", WAIT);
    // Past the first token's expiry (3 s + the relay's 5 s skew): still live.
    await new Promise((r) => setTimeout(r, 9_000));
    await N.exec("INSERT INTO note VALUES ('node-2', 'later')");
    await until(() => pageSees("node-2"), "a later write reached the page on a refreshed token", WAIT);
    const status = await page.evaluate(() => (window as any).replica.status());
    assert.equal(status.live, true);
    assert.ok(minted >= 2, `the page's token function ran ${minted} times`);
    assert.deepEqual(log.filter((l) => /error/i.test(l) && !/favicon/.test(l)), []);
    await page.evaluate(() => (window as any).replica.close());
    await page.close();
  });
});
