/**
 * Batched transaction calls in real Chromium: tx.exec / tx.query a page
 * issues in one turn go to the database worker as one message, run there in
 * order, and each settles on its own as if sent alone; a failing one rejects
 * only itself, and the transaction rolls back whole when `fn` fails. Results
 * of calls inside a transaction carry no status (no outbox count per
 * statement); the commit's does. The same through a follower tab, whose
 * calls run in the owner tab's worker.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import type { BrowserReplica } from "../client/browser/index.ts";
import { bundlePage, launch, WAIT, watchPage } from "./support/browser.ts";
import type { CrashState, Traffic } from "./support/replica-page.ts";
import { startRelay, type TestRelay } from "./support/relay.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
let dir: string;
let relay: TestRelay;
let browser: Browser;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "changeset-relay-batch-"));
  await bundlePage(`${root}test/support/replica-page.ts`, dir);
  relay = await startRelay({ assets: dir });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await relay?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The page's globals, inside page.evaluate. */
declare global {
  var crash: { replica(): BrowserReplica; takeTraffic(): Traffic; open(o: unknown): Promise<CrashState> };
}

/** Runs the batches in the page; `base` keeps each tab's rows apart. */
function batches(page: Page, base: number) {
  return page.evaluate(async (base) => {
    const r = crash.replica();
    crash.takeTraffic();
    const inOrder = await r.transaction((tx) =>
      Promise.all<unknown>([
        tx.exec("INSERT INTO item VALUES (?, 0, 'a')", [base]),
        tx.exec("INSERT INTO item VALUES (?, 1, 'b')", [base]),
        tx.query("SELECT count(*) AS c FROM item WHERE tx = ?", [base]),
        tx.exec("UPDATE item SET v = v || '!' WHERE tx = ?", [base]),
        tx.query("SELECT v FROM item WHERE tx = ? ORDER BY k", [base]),
      ]),
    );
    const inOrderTraffic = crash.takeTraffic();

    const pendingBefore = r.status().pending;
    const settled = await r
      .transaction(async (tx) => {
        const all = await Promise.allSettled<unknown>([
          tx.exec("INSERT INTO item VALUES (?, 0, 'x')", [base + 1]),
          tx.exec("INSERT INTO item VALUES (?, 0, 'duplicate key')", [base + 1]),
          tx.exec("INSERT INTO item VALUES (?, 1, 'y')", [base + 1]),
          tx.query("SELECT count(*) AS c FROM item WHERE tx = ?", [base + 1]),
        ]);
        throw Object.assign(new Error("roll back"), { all: all.map((x) => (x.status === "fulfilled" ? x.value : { error: (x.reason as Error).message })) });
      })
      .catch((e: { all: unknown[] }) => e.all);
    const rejected = await r
      .transaction((tx) => Promise.all([tx.exec("INSERT INTO item VALUES (?, 0, 'z')", [base + 2]), tx.exec("INSERT INTO nowhere VALUES (1)"), tx.exec("INSERT INTO item VALUES (?, 1, 'z')", [base + 2])]))
      .then(
        () => "committed",
        (e: Error) => e.message,
      );
    const rolledBack = await r.query("SELECT count(*) AS c FROM item WHERE tx IN (?, ?)", [base + 1, base + 2]);
    const pendingAfter = r.status().pending;

    crash.takeTraffic();
    await r.transaction(async (tx) => {
      await tx.exec("INSERT INTO item VALUES (?, 0, 'one')", [base + 3]);
      await tx.exec("INSERT INTO item VALUES (?, 1, 'by one')", [base + 3]);
    });
    const oneByOne = crash.takeTraffic();
    return { inOrder, inOrderTraffic, pendingBefore, settled, rejected, rolledBack, pendingAfter, oneByOne, pending: r.status().pending };
  }, base);
}

it("tx calls issued in one turn are one message each way, run in order, settle one by one; a failure rolls the transaction back whole", async () => {
  const db = `batch-${process.pid}`;
  const token = await relay.token("write", "batch", db);
  const context = await browser.newContext();
  try {
    const tabs: Page[] = [];
    for (const name of ["owner", "follower"]) {
      const page = await context.newPage();
      const log = watchPage(page, name);
      await page.goto(`${relay.url}/index.html`);
      await page.waitForSelector("body[data-ready='1']", { state: "attached", timeout: WAIT });
      const s = await page.evaluate((o) => crash.open(o), { db, token });
      assert.equal(s.owner, name === "owner", log.join("\n"));
      tabs.push(page);
    }
    for (const [i, page] of tabs.entries()) {
      const got = await batches(page, 100 * (i + 1));
      const tab = i === 0 ? "owner" : "follower";
      assert.deepEqual(got.inOrder, [{ changes: 1 }, { changes: 1 }, [{ c: 2 }], { changes: 2 }, [{ v: "a!" }, { v: "b!" }]], tab);
      assert.deepEqual(got.inOrderTraffic.calls, ["txBegin", "txBatch", "txEnd"], `${tab}: five calls, one message`);
      assert.deepEqual(
        got.inOrderTraffic.results.map((x) => x.status),
        [false, false, true],
        `${tab}: no status with the transaction's results, the commit's carries it`,
      );
      assert.equal(got.settled.length, 4);
      assert.deepEqual([got.settled[0], got.settled[2], got.settled[3]], [{ changes: 1 }, { changes: 1 }, [{ c: 2 }]], `${tab}: the calls around a failed one ran`);
      assert.match((got.settled[1] as { error: string }).error, /UNIQUE constraint failed/, tab);
      assert.match(got.rejected, /no such table: nowhere/, tab);
      assert.deepEqual(got.rolledBack, [{ c: 0 }], `${tab}: both transactions rolled back whole`);
      assert.equal(got.pendingAfter, got.pendingBefore, `${tab}: nothing queued by the rolled back transactions`);
      assert.deepEqual(got.oneByOne.calls, ["txBegin", "txExec", "txExec", "txEnd"], `${tab}: awaited calls go one by one`);
      assert.equal(got.pending, got.pendingAfter + 1);
    }
  } finally {
    await context.close();
  }
});
