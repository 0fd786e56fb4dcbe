import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

/**
 * Headless Chromium from Debian's package, driven by playwright-core (no
 * browser download). The flags keep it off the network: this machine only
 * reaches loopback.
 */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));

export function launch(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}

/** Generous: other test suites share the two cores. Tests wait on conditions, never on time. */
export const WAIT = 60_000;

/** Console errors and page errors of a page, for assertions and for failure messages. */
export function watchPage(page: Page, name: string): string[] {
  const log: string[] = [];
  page.on("console", (m) => log.push(`[${name} ${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[${name} pageerror] ${e.message}`));
  page.on("worker", (w) => w.on("console", (m) => log.push(`[${name} worker ${m.type()}] ${m.text()}`)));
  return log;
}

/** Pre-seeds the demo's token for `db` in a context, as if the page had fetched one before. */
export async function seedToken(context: BrowserContext, db: string, token: string): Promise<void> {
  await context.addInitScript(
    ([key, value]) => {
      if (localStorage.getItem(key) === null) localStorage.setItem(key, value);
    },
    [`changeset-relay-demo:${db}:token`, token] as const,
  );
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}${name}.png`, fullPage: true });
}
