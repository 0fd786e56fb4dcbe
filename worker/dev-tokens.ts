import { Hono } from "hono";
import { RelayError } from "../protocol/errors.ts";
import { name } from "../protocol/validate.ts";
import { signToken } from "../protocol/token.ts";
import { relaySecret } from "./config.ts";
import { errorResponse } from "./errors.ts";

/**
 * Local development only: `POST /v1/dev/token?db=NAME` mints a write token
 * for one database with a fresh random `sub`, so the demo (or any local app)
 * gets a client id of its own without a secret shipped to the browser.
 * Each browser is a user of its own: with one shared sub, any of them could
 * write under another's client id (worker/identity.ts binds ids to subs).
 *
 * Off unless the relay has `DEV_TOKENS = "1"` (`npm start` passes it to
 * wrangler dev; never set it in production: anyone who can reach the relay
 * could then write), and answered only on a loopback host even then.
 * Mounted by worker/index.ts with `app.route("/v1/dev", devTokens)`.
 */
/** The bindings it reads (a subset of Env; typed here so Node tests can import it without the Workers types). */
interface DevEnv {
  RELAY_SECRET?: string;
  DEV_TOKENS?: string;
}

export const DEV_TOKEN_TTL_SECONDS = 24 * 3600;
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

export const devTokens = new Hono<{ Bindings: DevEnv }>();
// Its own error mapping, so it answers the same mounted or on its own.
devTokens.onError((e) => errorResponse(e));

devTokens.post("/token", async (c) => {
  const url = new URL(c.req.url);
  if (c.env.DEV_TOKENS !== "1" || !LOOPBACK.has(url.hostname)) {
    // Indistinguishable from a relay without the endpoint.
    throw new RelayError("not_found", `no route POST ${url.pathname}`);
  }
  const db = name(url.searchParams.get("db") ?? "", "database name");
  const sub = `dev-${randomHex(8)}`;
  const token = await signToken({ db, role: "write", sub }, relaySecret(c.env), DEV_TOKEN_TTL_SECONDS);
  return c.json({ token, db, role: "write", sub, ttl: DEV_TOKEN_TTL_SECONDS }, 200, { "cache-control": "no-store" });
});

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}
