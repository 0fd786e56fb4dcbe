import { Hono } from "hono";
import { decode } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { name, parsePushRequest } from "../protocol/messages.ts";
import { MAX_BODY_BYTES_DEFAULT } from "../protocol/limits.ts";
import { acceptsGzip, COMPRESS_MIN_BYTES, GZIP, readBody } from "../protocol/compression.ts";
import { MIN_PROTOCOL_VERSION, MSGPACK, PACKAGE_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { authorize, checkPush } from "./auth.ts";
import { devTokens } from "./dev-tokens.ts";
import { errorResponse } from "./errors.ts";
import type { Env } from "./env.ts";

import { ROLE_HEADER, SUB_HEADER } from "./log.ts";

export { ChangesetLog } from "./log.ts";

/**
 * The front door: routing, auth, name checks, size limits and changeset
 * validation happen here, so the database's Durable Object only ever sees
 * requests that passed.
 */
const app = new Hono<{ Bindings: Env }>();

app.get("/v1/health", (c) =>
  c.json({ ok: true, version: PACKAGE_VERSION, protocol: { min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION } }),
);

function bodyLimit(env: Env): number {
  const n = Number(env.MAX_BODY_BYTES);
  return Number.isSafeInteger(n) && n > 0 ? n : MAX_BODY_BYTES_DEFAULT;
}

/** Read a push body (plain or gzip), refusing it as soon as it, or what it inflates to, passes `limit`. */
async function readPushBody(request: Request, limit: number): Promise<Uint8Array> {
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > limit) throw new RelayError("payload_too_large", `request body exceeds ${limit} bytes`);
  return readBody(request.body, request.headers.get("content-encoding"), limit);
}

function logFor(env: Env, db: string) {
  return env.LOG.get(env.LOG.idFromName(db));
}

app.post("/v1/db/:db/push", async (c) => {
  const db = name(c.req.param("db"), "database name");
  const claims = await authorize(c.env, c.req.raw, db, "write");
  const type = c.req.header("content-type") ?? "";
  if (!type.startsWith(MSGPACK)) throw new RelayError("unsupported_media_type", `push bodies must be ${MSGPACK}`);
  const raw = await readPushBody(c.req.raw, bodyLimit(c.env));
  const body = parsePushRequest(decode(raw));
  checkPush(claims, body);
  return logFor(c.env, db).fetch("https://log/push", { method: "POST", body: raw, headers: { "content-type": MSGPACK } });
});

app.get("/v1/db/:db/pull", async (c) => {
  const db = name(c.req.param("db"), "database name");
  await authorize(c.env, c.req.raw, db, "read");
  const q = new URL(c.req.url).search;
  const res = await logFor(c.env, db).fetch(`https://log/pull${q}`);
  if (!res.ok || !acceptsGzip(c.req.header("accept-encoding"))) return res;
  // Compressed here, in the stateless Worker, not in the database's object:
  // the Workers runtime gzips a body whose Content-Encoding says so
  // (encodeBody "automatic"), natively, as it streams out. The page is read
  // first because its size decides (the object's response has no length here).
  const body = await res.arrayBuffer();
  const headers = new Headers(res.headers);
  headers.append("vary", "accept-encoding");
  if (body.byteLength >= COMPRESS_MIN_BYTES) headers.set("content-encoding", GZIP);
  return new Response(body, { status: res.status, headers });
});

// Live sync. Claims are verified here and handed to the database's object in
// headers only the Worker can set (the object is not reachable otherwise).
app.get("/v1/db/:db/ws", async (c) => {
  const db = name(c.req.param("db"), "database name");
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new RelayError("upgrade_required", "this route only speaks WebSocket (send Upgrade: websocket)");
  }
  const claims = await authorize(c.env, c.req.raw, db, "read", { queryToken: true });
  return logFor(c.env, db).fetch("https://log/ws", {
    headers: { upgrade: "websocket", [ROLE_HEADER]: claims.role, [SUB_HEADER]: claims.sub },
  });
});

// Local development only (DEV_TOKENS=1): tokens for the demo, see dev-tokens.ts.
app.route("/v1/dev", devTokens);

app.notFound((c) => errorResponse(new RelayError("not_found", `no route ${c.req.method} ${new URL(c.req.url).pathname}`)));
app.onError((e) => errorResponse(e));

export default app;
