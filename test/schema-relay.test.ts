import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { encode } from "../protocol/codec.ts";
import { useRelay } from "./support/fixture.ts";
import { pushRaw, pullAll } from "./support/http.ts";

const relay = useRelay();

describe("smoke", () => {
  it("schema push", async () => {
    const db = relay.db("s");
    const t = await relay.token("write", "a", db);
    const r = await pushRaw(relay.url, db, t, encode({ client: "a", schema: [{ version: 1, statements: ["CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, g GENERATED ALWAYS AS (title || 'x'))", "CREATE VIRTUAL TABLE f USING fts5(body)"] }], entries: [] }));
    console.log(r.status, r.body);
    const r2 = await pushRaw(relay.url, db, t, encode({ client: "a", schema: [{ version: 2, statements: ["ALTER TABLE todo ADD COLUMN done INTEGER DEFAULT 0", "ALTER TABLE todo RENAME COLUMN title TO name", "ALTER TABLE todo DROP COLUMN done"] }], entries: [] }));
    console.log(r2.status, r2.body);
    const r3 = await pushRaw(relay.url, db, t, encode({ client: "a", schema: [{ version: 3, statements: ["CREATE TABLE x(a); DELETE FROM relay_log"] }], entries: [] }));
    console.log(r3.status, r3.body);
    const r4 = await pushRaw(relay.url, db, t, encode({ client: "a", schema: [{ version: 3, statements: ["CREATE TABLE x(a PRIMARY KEY, b REFERENCES nope(id))", "CREATE TABLE y(a PRIMARY KEY) nonsense"] }], entries: [] }));
    console.log(r4.status, r4.body);
    console.log(JSON.stringify(await pullAll(relay.url, db, t)));
  });
});
