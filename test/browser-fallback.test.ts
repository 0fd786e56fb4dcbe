/**
 * A machine without a system browser: with the system's hidden, the browser
 * tests launch the Chromium shipped in the @sparticuz/chromium dev dependency,
 * and two contexts of it are separate profiles (its --single-process default
 * would make them share Web Locks, OPFS and BroadcastChannel).
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { readlinkSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Browser } from "playwright-core";
import { descendants } from "../bench/proc.ts";
import { findChromium, launch } from "./support/browser.ts";

let browser: Browser;
let server: Server;
let origin: string;

before(async () => {
  delete process.env.CHROMIUM_PATH;
  process.env.CHROMIUM_HIDE_SYSTEM = "1";
  server = createServer((_, res) => res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>fallback</title>"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await launch();
});
after(async () => {
  await browser?.close();
  server?.close();
});

/** Executables of this process's children and theirs: playwright-core spawns the browser itself. */
function childExecutables(): string[] {
  return descendants(process.pid).flatMap((pid) => {
    try {
      return [readlinkSync(`/proc/${pid}/exe`)];
    } catch {
      return []; // ended while we looked
    }
  });
}

it("with the system browser hidden, the one from @sparticuz/chromium is launched", async () => {
  const found = await findChromium();
  assert.equal(found.source, "npm");
  assert.ok(childExecutables().includes(found.path), `${found.path} among ${childExecutables().join(", ")}`);
});

it("its contexts are separate profiles: a Web Lock held in one is free in another", async () => {
  const [a, b] = [await browser.newContext(), await browser.newContext()];
  const [pa, pb] = [await a.newPage(), await b.newPage()];
  await Promise.all([pa.goto(origin), pb.goto(origin)]);
  await pa.evaluate(() => new Promise<void>((held) => void navigator.locks.request("relay", () => (held(), new Promise(() => {})))));
  const inA = await pa.evaluate(() => navigator.locks.request("relay", { ifAvailable: true }, (lock) => lock !== null));
  const inB = await pb.evaluate(() => navigator.locks.request("relay", { ifAvailable: true }, (lock) => lock !== null));
  assert.deepEqual({ inA, inB }, { inA: false, inB: true });
  await Promise.all([a.close(), b.close()]);
});
