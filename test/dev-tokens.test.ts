import { it } from "node:test";
import assert from "node:assert/strict";
import { verifyToken } from "../protocol/token.ts";
import { DEV_TOKEN_TTL_SECONDS, devTokens } from "../worker/dev-tokens.ts";

const SECRET = "dev-secret";
const post = (url: string, env: Record<string, string>) => devTokens.request(url, { method: "POST" }, env);

it("mints a write token for one database with a fresh sub when DEV_TOKENS=1, on loopback", async () => {
  const env = { DEV_TOKENS: "1", RELAY_SECRET: SECRET };
  const a = await post("http://127.0.0.1:8787/token?db=demo", env);
  assert.equal(a.status, 200);
  assert.equal(a.headers.get("cache-control"), "no-store");
  const body = (await a.json()) as { token: string; sub: string; db: string; role: string };
  const claims = await verifyToken(body.token, SECRET);
  assert.deepEqual([claims.db, claims.role, claims.sub], ["demo", "write", body.sub]);
  assert.match(claims.sub, /^dev-[0-9a-f]{16}$/);
  assert.equal(claims.exp! - claims.iat!, DEV_TOKEN_TTL_SECONDS);
  const b = (await (await post("http://localhost:8787/token?db=demo", env)).json()) as { sub: string };
  assert.notEqual(b.sub, body.sub, "every token is a new client");
});

it("does not exist unless enabled, nor on a non-loopback host", async () => {
  for (const [url, env] of [
    ["http://127.0.0.1:8787/token?db=demo", { RELAY_SECRET: SECRET }],
    ["http://127.0.0.1:8787/token?db=demo", { RELAY_SECRET: SECRET, DEV_TOKENS: "true" }],
    ["https://relay.example.com/token?db=demo", { RELAY_SECRET: SECRET, DEV_TOKENS: "1" }],
  ] as const) {
    const res = await post(url, env);
    assert.equal(res.status, 404, url);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "not_found");
  }
});

it("refuses a bad database name", async () => {
  const res = await post("http://127.0.0.1:8787/token?db=no%20spaces", { DEV_TOKENS: "1", RELAY_SECRET: SECRET });
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, "invalid_name");
});
