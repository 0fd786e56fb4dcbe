/**
 * The demo app in real headless Chromium, served by the real relay (workerd
 * via Miniflare, demo/dist as static assets, as `npm start` serves it).
 * Each browser context is a separate browser profile: its own OPFS, its own
 * token, its own replica. Everything waits on conditions, never on time.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import type { Replica } from "../client/index.ts";
import type { BrowserReplica } from "../client/browser/index.ts";
import { DEMO_SCHEMA } from "../demo/schema.ts";
import { launch, screenshot, seedToken, WAIT, watchPage } from "./support/browser.ts";
import { useRelay } from "./support/fixture.ts";
import { dump, replica } from "./support/replicas.ts";

const DIST = fileURLToPath(new URL("../demo/dist", import.meta.url));
/** A name Chromium resolves to the relay but does not treat as a secure context (no OPFS, no Web Locks). */
const INSECURE_HOST = "relay.test";

const relay = useRelay({ assets: DIST, bindings: { DEV_TOKENS: "1" } });
let browser: Browser;
const contexts: BrowserContext[] = [];
const logs: string[][] = [];

before(async () => {
  browser = await launch([`--host-resolver-rules=MAP ${INSECURE_HOST} 127.0.0.1`]);
});
after(async () => {
  await browser?.close();
});

let dbCounter = 0;
const freshDb = (name: string) => `${name}-${process.pid}-${++dbCounter}`;

interface Demo {
  context: BrowserContext;
  page: Page;
  log: string[];
}

/** A new browser profile with its own write token for `db`, on the demo page. */
async function newProfile(db: string, who: string, origin = relay.url): Promise<Demo> {
  const context = await browser.newContext();
  contexts.push(context);
  await context.addInitScript(() => {
    (globalThis as unknown as { demoReplica: () => unknown }).demoReplica = () => (globalThis as unknown as { demo: { replica: unknown } }).demo.replica;
  });
  await seedToken(context, db, await relay.token("write", `${who}-${dbCounter}`, db));
  return openTab(context, db, who, origin);
}

async function openTab(context: BrowserContext, db: string, who: string, origin = relay.url): Promise<Demo> {
  const page = await context.newPage();
  const log = watchPage(page, who);
  logs.push(log);
  await page.goto(`${origin}/?db=${db}`);
  await ready(page, log);
  return { context, page, log };
}

async function ready(page: Page, log: string[]): Promise<void> {
  // Ready, or an error on the page: then fail at once, with what the page said.
  await page.waitForSelector("body[data-ready='1'], [data-testid=error]:not([hidden])", { timeout: WAIT }).catch(() => undefined);
  if ((await page.getAttribute("body", "data-ready")) !== "1") {
    throw new Error(`demo did not open: ${await page.textContent("[data-testid=error]").catch(() => "")}\n${log.join("\n")}`);
  }
}

type Item = { title: string; done: boolean };
function items(page: Page): Promise<Item[]> {
  return page.$$eval("[data-testid=todo]", (lis) =>
    lis.map((li) => ({ title: li.querySelector("[data-testid=title]")?.textContent ?? "", done: li.querySelector<HTMLInputElement>("[data-testid=toggle]")!.checked })),
  );
}

/** Waits until the page lists exactly these todos (order of creation). */
async function waitForItems(page: Page, expected: Item[], what: string): Promise<void> {
  try {
    await page.waitForFunction(
      (want) => {
        const got = [...document.querySelectorAll("[data-testid=todo]")].map((li) => ({
          title: li.querySelector("[data-testid=title]")?.textContent ?? "",
          done: li.querySelector<HTMLInputElement>("[data-testid=toggle]")!.checked,
        }));
        return JSON.stringify(got) === JSON.stringify(want);
      },
      expected,
      { timeout: WAIT },
    );
  } catch (e) {
    assert.deepEqual(await items(page), expected, `${what} (timed out waiting)`);
    throw e;
  }
}

async function add(page: Page, title: string): Promise<void> {
  await page.fill("[data-testid=new-title]", title);
  await page.press("[data-testid=new-title]", "Enter");
}

async function editTitle(page: Page, from: string, to: string): Promise<void> {
  await page.dblclick(`[data-testid=title]:text-is("${from}")`);
  await page.fill("[data-testid=edit]", to);
  await page.press("[data-testid=edit]", "Enter");
}

async function toggle(page: Page, title: string): Promise<void> {
  await page.click(`[data-testid=todo]:has([data-testid=title]:text-is("${title}")) [data-testid=toggle]`);
}

/** The demo's offline switch. */
async function setOnline(page: Page, online: boolean): Promise<void> {
  const checked = await page.isChecked("[data-testid=online]");
  if (checked !== online) await page.click("label.switch");
  await page.waitForSelector(online ? "[data-testid=connection][data-state=live]" : "[data-testid=connection][data-state=offline]", { timeout: WAIT });
}

function pending(page: Page, n: number): Promise<unknown> {
  return page.waitForSelector(`[data-testid=pending][data-count="${n}"]`, { timeout: WAIT });
}

/** The replica's table through the page's replica, in the shape test/support/replicas.ts dumps. */
function browserDump(page: Page): Promise<string> {
  const proxy = {
    query: (sql: string) => page.evaluate((q) => (globalThis as unknown as { demo: { replica: { query(q: string): Promise<unknown[]> } } }).demo.replica.query(q), sql),
  };
  return dump(proxy as unknown as Replica);
}

/** The demo's replica, inside page.evaluate. */
declare global {
  function demoReplica(): BrowserReplica;
}
async function cursorOf(page: Page): Promise<number> {
  return page.evaluate(() => demoReplica().status().cursor);
}

describe("the demo in Chromium", () => {
  it("a todo added in one browser appears in another, live", async () => {
    const db = freshDb("live");
    const a = await newProfile(db, "a");
    const b = await newProfile(db, "b");
    for (const { page } of [a, b]) {
      await page.waitForSelector("[data-testid=connection][data-state=live]", { timeout: WAIT });
      assert.equal(await page.textContent("[data-testid=storage]"), "OPFS · persistent");
    }
    await add(a.page, "buy milk");
    await waitForItems(b.page, [{ title: "buy milk", done: false }], "B sees A's todo without reloading");
    await toggle(b.page, "buy milk");
    await waitForItems(a.page, [{ title: "buy milk", done: true }], "A sees B's toggle");
    await add(b.page, "walk the dog");
    await waitForItems(a.page, [{ title: "buy milk", done: true }, { title: "walk the dog", done: false }], "A sees B's todo");
    await a.page.click(`[data-testid=todo]:has([data-testid=title]:text-is("buy milk")) [data-testid=delete]`);
    await waitForItems(b.page, [{ title: "walk the dog", done: false }], "B sees A's delete");
    await screenshot(a.page, "live-a");
    await screenshot(b.page, "live-b");
    assert.equal(await browserDump(a.page), await browserDump(b.page));
  });

  it("a reload keeps the data (OPFS) and the pending outbox", async () => {
    const db = freshDb("reload");
    const a = await newProfile(db, "a");
    const b = await newProfile(db, "b");
    await add(a.page, "synced before");
    await waitForItems(b.page, [{ title: "synced before", done: false }], "B has the first todo");
    await setOnline(a.page, false);
    await add(a.page, "written offline");
    await pending(a.page, 1);
    await a.page.reload();
    await ready(a.page, a.log);
    await waitForItems(a.page, [{ title: "synced before", done: false }, { title: "written offline", done: false }], "A after reload");
    await pending(a.page, 1);
    assert.equal(await a.page.getAttribute("[data-testid=connection]", "data-state"), "offline", "the offline switch survives the reload");
    assert.equal(await a.page.getAttribute("[data-testid=storage]", "data-storage"), "opfs");
    await screenshot(a.page, "reload-offline");
    assert.deepEqual(await items(b.page), [{ title: "synced before", done: false }], "nothing left A while offline");
    await setOnline(a.page, true);
    await pending(a.page, 0);
    await waitForItems(b.page, [{ title: "synced before", done: false }, { title: "written offline", done: false }], "B gets the outbox after A goes online");
  });

  it("reset names the unsynced edits it would lose, and pushes first when online", async () => {
    const db = freshDb("reset");
    const a = await newProfile(db, "a");
    await setOnline(a.page, false);
    await add(a.page, "only here");
    await pending(a.page, 1);
    const asked: string[] = [];
    const answer = (accept: boolean) => a.page.once("dialog", (d) => void (asked.push(d.message()), accept ? d.accept() : d.dismiss()));
    answer(false);
    await a.page.click("#reset");
    for (let i = 0; i < 100 && asked.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(asked[0] ?? "", /1 edit not yet synced will be lost/);
    await pending(a.page, 1);
    await setOnline(a.page, true);
    answer(true);
    await Promise.all([a.page.waitForEvent("load", { timeout: WAIT }), a.page.click("#reset")]);
    assert.match(asked[1] ?? "", /Every edit here is synced/);
    await ready(a.page, a.log);
    await waitForItems(a.page, [{ title: "only here", done: false }], "the fresh copy bootstraps the pushed todo from the relay");
  });

  it("offline edits of one todo converge: the later log entry wins, per column", async () => {
    const db = freshDb("conflict");
    const a = await newProfile(db, "a");
    const b = await newProfile(db, "b");
    await add(a.page, "walk the dog");
    await waitForItems(b.page, [{ title: "walk the dog", done: false }], "B has the todo");
    await setOnline(a.page, false);
    // B's edit reaches the log first...
    await editTitle(b.page, "walk the dog", "walk the cat (B)");
    await pending(b.page, 0);
    // ...A's offline edits of the same column (and another one) land after it.
    await editTitle(a.page, "walk the dog", "walk the dog twice (A)");
    await toggle(a.page, "walk the dog twice (A)");
    await pending(a.page, 2);
    await screenshot(a.page, "conflict-a-offline");
    await setOnline(a.page, true);
    const expected = [{ title: "walk the dog twice (A)", done: true }];
    await waitForItems(a.page, expected, "A converged");
    await waitForItems(b.page, expected, "B converged");
    await pending(a.page, 0);
    assert.equal(await browserDump(a.page), await browserDump(b.page));
    // B had its title overwritten by A's later entry: a data conflict, resolved "replace", in B's log.
    await b.page.waitForFunction(() => Number(document.querySelector("[data-testid=conflict-count]")!.textContent) >= 1, null, { timeout: WAIT });
    const conflicts = await b.page.evaluate(() => (globalThis as unknown as { demo: { replica: { conflicts(): Promise<{ kind: string; resolution: string; table: string }[]> } } }).demo.replica.conflicts());
    assert.ok(conflicts.some((c) => c.kind === "data" && c.resolution === "replace" && c.table === "todo"), JSON.stringify(conflicts));
    await screenshot(b.page, "conflict-b-log");
  });

  it("two tabs of one browser share one database: one owns it, the other proxies, and takes over", async () => {
    const db = freshDb("tabs");
    const first = await newProfile(db, "tab1");
    const second = await openTab(first.context, db, "tab2");
    const other = await newProfile(db, "other");
    assert.equal(await first.page.textContent("[data-testid=tab-role]"), "this tab owns the database");
    assert.equal(await second.page.textContent("[data-testid=tab-role]"), "another tab owns the database");
    await add(second.page, "from tab 2");
    await waitForItems(first.page, [{ title: "from tab 2", done: false }], "tab 1 sees tab 2's write at once");
    await waitForItems(other.page, [{ title: "from tab 2", done: false }], "another browser gets it through the relay");
    const clientIds = await Promise.all([first.page, second.page].map((p) => p.textContent("[data-testid=client-id]")));
    assert.equal(clientIds[0], clientIds[1], "one replica, one client id");
    await pending(second.page, 0); // the owner's status reaches the other tab too
    // A transaction from a non-owner tab runs in the owner, op by op, and is one changeset.
    const before = await cursorOf(second.page);
    await second.page.evaluate(() =>
      demoReplica().transaction(async (tx) => {
        await tx.exec("INSERT INTO todo(id, title, done, created_at) VALUES ('t1', 'tx one', 0, 1e13)");
        await tx.exec("UPDATE todo SET title = 'tx one (edited)' WHERE id = 't1'");
      }),
    );
    await waitForItems(other.page, [{ title: "from tab 2", done: false }, { title: "tx one (edited)", done: false }], "a cross-tab transaction replicates");
    await second.page.waitForFunction((c) => demoReplica().status().cursor === c + 1, before, { timeout: WAIT });
    // A tab that dies inside a transaction must not leave the database locked for the others.
    const third = await openTab(first.context, db, "tab3");
    await third.page.evaluate(() => {
      void demoReplica().transaction(async (tx) => {
        await tx.exec("INSERT INTO todo(id, title, done, created_at) VALUES ('t2', 'never committed', 0, 2e13)");
        (globalThis as unknown as { txOpen: boolean }).txOpen = true;
        await new Promise(() => undefined);
      });
    });
    await third.page.waitForFunction(() => (globalThis as unknown as { txOpen?: boolean }).txOpen === true, null, { timeout: WAIT });
    await third.page.close();
    await add(first.page, "after an abandoned transaction");
    const three = [
      { title: "from tab 2", done: false },
      { title: "after an abandoned transaction", done: false },
      { title: "tx one (edited)", done: false },
    ];
    await waitForItems(first.page, three, "the owner goes on writing after a tab died mid-transaction, which rolled back");
    await waitForItems(other.page, three, "and replicates");
    await screenshot(second.page, "tabs-follower");
    await first.page.close();
    await second.page.waitForSelector("[data-testid=tab-role]:text-is('this tab owns the database')", { timeout: WAIT });
    await second.page.waitForSelector("[data-testid=connection][data-state=live]", { timeout: WAIT });
    await add(second.page, "after the takeover");
    const both = [
      { title: "from tab 2", done: false },
      { title: "after an abandoned transaction", done: false },
      { title: "after the takeover", done: false },
      { title: "tx one (edited)", done: false },
    ];
    await waitForItems(second.page, both, "the new owner keeps the data and writes");
    await waitForItems(other.page, both, "and its writes replicate");
    assert.deepEqual(second.log.filter((l) => /pageerror/.test(l)), []);
  });

  it("the page's replica has the openReplica API: transactions roll back, errors are RelayErrors with codes", async () => {
    const db = freshDb("api");
    const { page } = await newProfile(db, "api");
    const result = await page.evaluate(async () => {
      const r = demoReplica();
      const caught = async (fn: () => Promise<unknown>) => fn().then(() => null, (e: { name: string; code?: string; message: string }) => ({ name: e.name, code: e.code }));
      await r.setLive(false);
      // A catch-up the socket asked for before it stopped may still run; let it end before writing, so what follows stays pending.
      await r.sync();
      const committed = await r.transaction(async (tx) => {
        await tx.exec("INSERT INTO todo(id, title, done, created_at) VALUES ('a', 'kept', 0, 1)");
        return (await tx.query<{ n: number }>("SELECT count(*) AS n FROM todo"))[0]!.n;
      });
      const rolledBack = await caught(() =>
        r.transaction(async (tx) => {
          await tx.exec("INSERT INTO todo(id, title, done, created_at) VALUES ('b', 'dropped', 0, 2)");
          throw new Error("changed my mind");
        }),
      );
      return {
        committed,
        rolledBack,
        ddl: await caught(() => r.exec("CREATE TABLE other(id INTEGER PRIMARY KEY)")),
        sqlError: await caught(() => r.exec("INSERT INTO nope VALUES (1)")),
        rows: await r.query("SELECT id, title FROM todo ORDER BY id"),
        pending: r.status().pending,
        status: r.status(),
        // relay_id() on the worker's connection; a virtual table is local: writing it queues nothing.
        relayId: (await r.query<{ id: number }>("SELECT relay_id() AS id"))[0]!.id,
        local: await (async () => {
          await r.query("CREATE VIRTUAL TABLE IF NOT EXISTS scratch USING fts5(body)");
          await r.exec("INSERT INTO scratch VALUES ('only here')");
          return { pending: r.status().pending, found: await r.query("SELECT body FROM scratch WHERE scratch MATCH 'here'") };
        })(),
      };
    });
    assert.ok(Number.isSafeInteger(result.relayId) && result.relayId > 0, String(result.relayId));
    assert.deepEqual(result.local, { pending: 1, found: [{ body: "only here" }] });
    assert.equal(result.committed, 1);
    assert.deepEqual(result.rolledBack, { name: "Error", code: undefined });
    assert.deepEqual(result.ddl, { name: "RelayError", code: "ddl_outside_schema" });
    assert.equal(result.sqlError?.name, "Error");
    assert.deepEqual(result.rows, [{ id: "a", title: "kept" }]);
    assert.equal(result.pending, 1);
    assert.equal(result.status.live, false);
    assert.equal(result.status.driver, "wasm");
    assert.equal(result.status.owner, true);
  });

  it("a Node replica and a browser replica converge on one database", async () => {
    const db = freshDb("node");
    const web = await newProfile(db, "web");
    const node = await replica(relay, db, `node-${dbCounter}`, "node", { schema: DEMO_SCHEMA });
    try {
      await add(web.page, "from the browser");
      await waitUntil(async () => (await node.sync(), (await node.query("SELECT * FROM todo")).length === 1), "Node pulls the browser's todo");
      await node.exec("INSERT INTO todo(title, done, created_at) VALUES (?, 0, ?)", ["from Node", Date.now() + 1000]);
      await node.exec("UPDATE todo SET done = 1 WHERE title = ?", ["from the browser"]);
      await node.sync();
      await waitForItems(web.page, [{ title: "from the browser", done: true }, { title: "from Node", done: false }], "the browser gets Node's writes live");
      await node.sync();
      assert.equal(await browserDump(web.page), await dump(node));
      const [status] = await Promise.all([web.page.evaluate(() => (globalThis as unknown as { demo: { replica: { status(): { cursor: number } } } }).demo.replica.status())]);
      assert.equal(status.cursor, node.status().cursor);
    } finally {
      await node.close();
    }
  });

  it("the demo gets its own development token from the relay (DEV_TOKENS=1, as npm start sets)", async () => {
    const db = freshDb("devtoken");
    const tabs: Demo[] = [];
    for (const who of ["dev1", "dev2"]) {
      const context = await browser.newContext();
      contexts.push(context);
      tabs.push(await openTab(context, db, who));
    }
    const ids = await Promise.all(tabs.map((d) => d.page.textContent("[data-testid=client-id]")));
    // The client id is the database's own (128 random bits), not the dev token's sub.
    for (const id of ids) assert.match(id ?? "", /^[A-Za-z0-9_-]{22}$/);
    assert.notEqual(ids[0], ids[1], "each browser is its own client");
    await add(tabs[0]!.page, "with a dev token");
    await waitForItems(tabs[1]!.page, [{ title: "with a dev token", done: false }], "dev-token replicas sync");
    await tabs[0]!.page.reload();
    await ready(tabs[0]!.page, tabs[0]!.log);
    assert.equal(await tabs[0]!.page.textContent("[data-testid=client-id]"), ids[0], "the client id is kept with the persistent database");
  });

  it("without OPFS (an insecure origin) the replica runs in memory and says so", async () => {
    const db = freshDb("memory");
    const port = new URL(relay.url).port;
    const m = await newProfile(db, "mem", `http://${INSECURE_HOST}:${port}`);
    const other = await newProfile(db, "other");
    assert.equal(await m.page.getAttribute("[data-testid=storage]", "data-storage"), "memory");
    const status = await m.page.evaluate(() => (globalThis as unknown as { demo: { replica: { status(): { storage: string; persistent: boolean } } } }).demo.replica.status());
    assert.equal(status.storage, "memory");
    assert.equal(status.persistent, false);
    assert.ok(m.log.some((l) => /warn/.test(l) && /OPFS is not available/.test(l)), m.log.join("\n"));
    await add(m.page, "kept in memory");
    await waitForItems(other.page, [{ title: "kept in memory", done: false }], "a memory replica still syncs");
    await screenshot(m.page, "memory-fallback");
  });
});

async function waitUntil(cond: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
