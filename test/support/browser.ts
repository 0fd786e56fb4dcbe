import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

/** Where a browser comes from: $CHROMIUM_PATH, the system's, or the one shipped inside @sparticuz/chromium. */
export type ChromiumSource = "env" | "system" | "npm";

export const SYSTEM_CHROMIUM = "/usr/bin/chromium";
export const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));

/**
 * The Chromium the browser tests drive, found without installing anything by
 * hand: $CHROMIUM_PATH, else the system's when present, else the headless
 * Chromium inside the @sparticuz/chromium dev dependency (unpacked into the
 * temp folder on first use, ~2 s). CHROMIUM_HIDE_SYSTEM=1 skips the system's,
 * so the fallback can be tested on a machine that has one.
 */
export async function findChromium(): Promise<{ path: string; source: ChromiumSource }> {
  if (process.env.CHROMIUM_PATH) return { path: process.env.CHROMIUM_PATH, source: "env" };
  if (!process.env.CHROMIUM_HIDE_SYSTEM && existsSync(SYSTEM_CHROMIUM)) return { path: SYSTEM_CHROMIUM, source: "system" };
  const { default: packaged } = await import("@sparticuz/chromium");
  return { path: await packaged.executablePath(), source: "npm" };
}

/**
 * Headless Chromium driven by playwright-core (no browser download). Our own
 * flags, not @sparticuz/chromium's defaults: those include --single-process,
 * under which two contexts share OPFS, Web Locks and BroadcastChannel, and
 * --disable-web-security. The rest keep it off the network: this machine only
 * reaches loopback.
 */
export async function launch(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({ executablePath: (await findChromium()).path, args: [...FLAGS, ...extraArgs] });
}

const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

/**
 * A browser with a profile on disk (`userDataDir`), as people run one.
 * `browser.newContext()` profiles are off the record: Chromium keeps their
 * OPFS in memory behind the browser process, so every read and write of a
 * sync access handle is a message to it — slower than a real profile's
 * files, and gone when the context closes.
 */
export async function launchProfile(userDataDir: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(userDataDir, { executablePath: (await findChromium()).path, args: FLAGS });
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

/**
 * Bundles a page module (which imports "changeset-relay/browser") with the
 * database worker and sqlite3.wasm into `outdir`, with an index.html loading
 * it: what an app's bundler makes. The page passes `worker: new
 * URL("./worker.js", import.meta.url)` and `wasmUrl: new URL("./sqlite3.wasm",
 * location.href).href`.
 */
export async function bundlePage(page: string, outdir: string, extra: { in: string; out: string }[] = []): Promise<void> {
  const { build } = await import("esbuild");
  const { appBuild } = await import("../../scripts/app-bundle.ts");
  await build({ ...appBuild([{ in: page, out: "page" }, ...extra], outdir), minify: true });
  copyFileSync(createRequire(import.meta.url).resolve("@sqlite.org/sqlite-wasm/sqlite3.wasm"), `${outdir}/sqlite3.wasm`);
  writeFileSync(`${outdir}/index.html`, `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><body><script type="module" src="./page.js"></script></body>\n`);
}
