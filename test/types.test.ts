/**
 * Type-level tests: `npm run typecheck` compiles this file, and each
 * @ts-expect-error fails the typecheck if the line below it compiles. The
 * test at the end only runs them against a real replica.
 */
import { it } from "node:test";
import assert from "node:assert/strict";
import { openReplica, type Replica } from "../client/index.ts";
import type { BrowserReplica } from "../client/browser/index.ts";
import type { ReactiveReplica } from "../client/react.ts";

function nodeEvents(r: Replica): void {
  r.on("change", (e) => e.tables.join());
  r.on("progress", (p) => p.entriesExpected.toFixed());
  // @ts-expect-error a misspelt event name does not compile
  r.on("chnage", () => {});
  // @ts-expect-error the payload is the event's own
  r.on("sync", (e: { tables: string[] }) => e);
}

function browserEvents(r: BrowserReplica): void {
  r.on("change", (e) => e.tables.join());
  r.on("progress", (p) => p.bytesExpected ?? 0);
  r.on("owner", (e) => e.owner);
  // @ts-expect-error a misspelt event name does not compile
  r.on("chnage", () => {});
}

/** A type alias (not an interface): it then fits Row's index signature. */
type Todo = { id: string; done: number };

function rowTypes(r: Replica, b: BrowserReplica): void {
  r.watch<Todo>("SELECT id, done FROM todo", [], (rows) => rows.map((t) => t.id.toUpperCase() + t.done.toFixed()));
  b.watch<Todo>("SELECT id, done FROM todo", [], (rows) => rows.map((t) => t.id.toUpperCase()));
  void r.query<Todo>("SELECT id, done FROM todo").then((rows) => rows[0]?.done.toFixed());
  // @ts-expect-error rows of the asserted type have no other columns
  r.watch<Todo>("SELECT id, done FROM todo", [], (rows) => rows[0]!.title);
  // Both replicas work with the React hooks.
  const hooks: ReactiveReplica[] = [r, b];
  void hooks;
}

it("the type-level checks above run against a real replica", async () => {
  const r = await openReplica({ url: "http://127.0.0.1:9", db: "types", schema: ["CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, done INTEGER)"] });
  try {
    nodeEvents(r);
    const rows = await new Promise<Todo[]>((resolve) => r.watch<Todo>("SELECT id, done FROM todo", [], resolve));
    assert.deepEqual(rows, []);
  } finally {
    await r.close();
  }
  void browserEvents;
  void rowTypes;
});
