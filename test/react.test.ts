/**
 * changeset-relay/react with the real React renderer (react-dom) in
 * Chromium, on browser replicas served by the real relay: a remote write
 * re-renders the component that watches its table exactly once, a write to
 * another table not at all; a second tab (a follower: its watch runs in the
 * owner tab's worker) re-renders once too. Waits on conditions, never on time.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { appBuild } from "../scripts/app-bundle.ts";
import type { Browser, Page } from "playwright-core";
import { launch, WAIT, watchPage } from "./support/browser.ts";
import { startRelay, type TestRelay } from "./support/relay.ts";
import { replica } from "./support/replicas.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const SCHEMA = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, note TEXT)",
  "CREATE TABLE IF NOT EXISTS other(id INTEGER PRIMARY KEY, v TEXT)",
];

/** The app: a todo list through useQuery (its renders counted), the cursor through useStatus. */
const APP = `
import { createElement as h } from "react";
import { createRoot } from "react-dom/client";
import { openReplica } from "${root}client/browser/index.ts";
import { useQuery, useStatus } from "${root}client/react.ts";
import wasm from "@sqlite.org/sqlite-wasm/sqlite3.wasm";

const hash = new URLSearchParams(location.hash.slice(1));
window.renders = 0;
function Todos({ replica }) {
  window.renders++;
  const { rows, loading, error } = useQuery(replica, "SELECT id, title FROM todo ORDER BY id");
  if (error) return h("p", { id: "error" }, error.message);
  return h("ul", { id: "todos", "data-loading": String(loading) }, rows.map((t) => h("li", { key: t.id }, t.title)));
}
function Status({ replica }) {
  const s = useStatus(replica);
  return h("p", { id: "status", "data-cursor": s.cursor, "data-connected": String(s.connected) }, s.cursor + " / " + s.head);
}
try {
  const replica = await openReplica({ url: location.origin, db: hash.get("db"), token: hash.get("token"), live: true,
    path: "react.sqlite3", schema: ${JSON.stringify(SCHEMA)},
    worker: new URL("./worker.js", import.meta.url), wasmUrl: new URL(wasm, import.meta.url).href });
  window.replica = replica;
  createRoot(document.getElementById("root")).render(h("div", null, h(Todos, { replica }), h(Status, { replica })));
} catch (e) {
  document.body.textContent = "failed: " + (e && e.message || e);
}
`;

let dir: string;
let relay: TestRelay;
let browser: Browser;

before(async () => {
  dir = mkdtempSync(join(root, "test/.react-app-"));
  writeFileSync(join(dir, "app.js"), APP);
  const out = join(dir, "dist");
  mkdirSync(out);
  await build(appBuild([{ in: join(dir, "app.js"), out: "app" }], out));

  writeFileSync(join(out, "index.html"), `<!doctype html><html><body><div id="root"></div><script type="module" src="./app.js"></script></body></html>`);
  relay = await startRelay({ assets: out });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await relay?.close();
  rmSync(dir, { recursive: true, force: true });
});

const renders = (page: Page) => page.evaluate(() => (window as unknown as { renders: number }).renders);
const titles = (page: Page) => page.$$eval("#todos li", (lis) => lis.map((li) => li.textContent));

/** Two animation frames: watch results are delivered on the first frame after they arrive. */
const frames = (page: Page) => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

async function atCursor(page: Page, cursor: number): Promise<void> {
  await page.waitForFunction((c) => (window as unknown as { replica: { status(): { cursor: number } } }).replica.status().cursor >= c, cursor, { timeout: WAIT });
  await page.waitForSelector(`#status[data-cursor="${cursor}"]`, { state: "attached", timeout: WAIT });
}

it("a remote write re-renders a useQuery component exactly once, in the owner tab and in a follower tab", async () => {
  const db = `react-${process.pid}`;
  const context = await browser.newContext();
  try {
    const url = `${relay.url}/#db=${db}&token=${await relay.token("write", "react-page", db)}`;
    const pages: Page[] = [];
    const logs: string[][] = [];
    for (const name of ["owner", "follower"]) {
      const page = await context.newPage();
      logs.push(watchPage(page, name));
      await page.goto(url);
      await page.waitForSelector("#todos[data-loading=false], #error", { state: "attached", timeout: WAIT });
      await page.waitForSelector("#status[data-connected=true]", { state: "attached", timeout: WAIT });
      pages.push(page);
    }
    const why = () => logs.flat().join("\n");
    assert.equal(await pages[1]!.evaluate(() => (window as unknown as { replica: { status(): { owner: boolean } } }).replica.status().owner), false, "the second tab follows");
    for (const page of pages) assert.deepEqual(await titles(page), [], why());

    const node = await replica(relay, db, "react-node", "node", { schema: SCHEMA });
    const before = await Promise.all(pages.map(renders));
    await node.exec("INSERT INTO todo(id, title) VALUES ('1', 'from node')");
    await node.sync();
    for (const page of pages) {
      await page.waitForFunction(() => document.querySelectorAll("#todos li").length === 1, null, { timeout: WAIT });
      assert.deepEqual(await titles(page), ["from node"]);
    }
    // A write to a table the query does not read, and frames for any late render to happen in.
    await node.exec("INSERT INTO other(v) VALUES ('unrelated')");
    await node.sync();
    for (const page of pages) {
      await atCursor(page, node.status().cursor); // 3: the schema's entry, then the two writes
      await frames(page);
    }
    const afterWrites = await Promise.all(pages.map(renders));
    assert.deepEqual(afterWrites, before.map((n) => n + 1), `one render per tab for the todo write, none for the other table\n${why()}`);
  } finally {
    await context.close();
  }
});
