import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startRelay, type TestRelay } from "./support/relay.ts";

/**
 * Every ```ts example block of the README runs, as a user would run it: a
 * module importing the built package by name ("changeset-relay/client"),
 * against a real relay, with tokens in the environment.
 */
const root = fileURLToPath(new URL("..", import.meta.url));
const scratch = `${root}test/.readme/`;
const examples = [...readFileSync(`${root}README.md`, "utf8").matchAll(/```ts example\n([\s\S]*?)```/g)].map((m) => m[1]!);

let relay: TestRelay;
before(async () => {
  relay = await startRelay();
  mkdirSync(scratch, { recursive: true });
});
after(async () => {
  await relay.close();
  rmSync(scratch, { recursive: true, force: true });
});

it("the README has runnable examples", () => assert.ok(examples.length >= 2));

// The first example runs twice with the same token, the second time with
// other data, as a person trying it would: a :memory: replica is a new
// replica each time, so its writes never collide with the first run's.
[0, ...examples.keys()].forEach((i, run) => {
  const code = run === 1 ? examples[i]!.replace("buy milk", "buy bread") : examples[i]!;
  it(`README example ${i + 1} runs${run === 0 ? " (a first time)" : ""}`, async () => {
    const file = `${scratch}example-${i + 1}.ts`;
    writeFileSync(file, code.replaceAll("http://127.0.0.1:8787", relay.url));
    const env = {
      ...process.env,
      TOKEN: await relay.token("write", `readme-${i}`, "todos"),
      NOTES_TOKEN: await relay.token("write", `readme-notes-${i}`, "notes"),
      TOKEN_A: await relay.token("write", `readme-a-${i}`, "live-demo"),
      TOKEN_B: await relay.token("write", `readme-b-${i}`, "live-demo"),
    };
    // An example that renders with react-dom gets a DOM (happy-dom), as a page would have.
    const args = code.includes("react-dom/client") ? ["--import", `${root}test/support/dom.ts`, file] : [file];
    const { stdout } = await promisify(execFile)(process.execPath, args, { env, timeout: 30_000 });
    // Each example prints what it did; check the part that proves it worked.
    if (code.includes("buy milk")) assert.match(stdout, /walk the dog/);
    if (code.includes("b applied log entry")) assert.match(stdout, /b applied log entry \d+ \[ \{ title: 'written on a' \} \]/);
    if (code.includes("b.watch")) assert.match(stdout, /b sees \[ 'watched from b' \]/);
    if (code.includes("useQuery")) assert.match(stdout, /<li>render me<\/li>/);
    if (code.includes("note_fts")) assert.match(stdout, /pending 1\n\[ \{ id: \d+, body: 'buy oat milk' \} \]/);
    if (code.includes("schemaVersion")) assert.match(stdout, /schema version 2 \[ \{ id: '3', due: '2027-04-15' \} \]/);
  });
});
