import { Hono } from "hono";
import { decode, encode } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { parsePullQuery, parsePushRequest } from "../protocol/messages.ts";
import { PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX } from "../protocol/limits.ts";
import { name } from "../protocol/validate.ts";
import { acceptsGzip, COMPRESS_MIN_BYTES, GZIP } from "../protocol/compression.ts";
import { MIN_PROTOCOL_VERSION, MSGPACK, PACKAGE_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { authorize, checkPush } from "./auth.ts";
import { readPushBody } from "./body.ts";
import { bodyLimit } from "./config.ts";
import { devTokens } from "./dev-tokens.ts";
import { errorResponse, unwrap } from "./errors.ts";
import type { Env } from "./env.ts";

export { ChangesetLog } from "./log.ts";

/**
 * The front door: routing, auth, name checks, size limits and validation of
 * every argument happen here, so the database's Durable Object only ever sees
 * calls that passed, as RPC arguments it does not decode again.
 */
const app = new Hono<{ Bindings: Env }>();

app.get("/v1/health", (c) =>
  c.json({ ok: true, version: PACKAGE_VERSION, protocol: { min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION } }),
);

function logFor(env: Env, db: string) {
  return env.LOG.get(env.LOG.idFromName(db));
}

function msgpack(value: unknown, headers: Record<string, string> = {}, acceptEncoding?: string): Response {
  const body = encode(value);
  const h = new Headers({ "content-type": MSGPACK, ...headers });
  if (acceptEncoding !== undefined) {
    h.append("vary", "accept-encoding");
    // Compressed here, in the stateless Worker, not in the database's object:
    // the Workers runtime gzips a body whose Content-Encoding says so
    // (encodeBody "automatic"), natively, as it streams out.
    if (body.byteLength >= COMPRESS_MIN_BYTES && acceptsGzip(acceptEncoding)) h.set("content-encoding", GZIP);
  }
  return new Response(body, { headers: h });
}

app.post("/v1/db/:db/push", async (c) => {
  const db = name(c.req.param("db"), "database name");
  const claims = await authorize(c.env, c.req.raw, db, "write");
  const type = c.req.header("content-type") ?? "";
  if (!type.startsWith(MSGPACK)) throw new RelayError("unsupported_media_type", `push bodies must be ${MSGPACK}`);
  const body = parsePushRequest(decode(await readPushBody(c.req.raw, bodyLimit(c.env))));
  checkPush(claims, body);
  return msgpack(unwrap(await logFor(c.env, db).push(body.client, body.entries)));
});

app.get("/v1/db/:db/pull", async (c) => {
  const db = name(c.req.param("db"), "database name");
  await authorize(c.env, c.req.raw, db, "read");
  const q = parsePullQuery(c.req.query("after"), c.req.query("limit"), PULL_LIMIT_MAX, PULL_LIMIT_DEFAULT);
  const { page, instance } = unwrap(await logFor(c.env, db).pull(q.after, q.limit));
  return msgpack(page, { "x-relay-instance": instance }, c.req.header("accept-encoding") ?? "");
});

app.get("/v1/db/:db/ws", async (c) => {
  const db = name(c.req.param("db"), "database name");
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new RelayError("upgrade_required", "this route only speaks WebSocket (send Upgrade: websocket)");
  }
  const claims = await authorize(c.env, c.req.raw, db, "read", { queryToken: true });
  return logFor(c.env, db).subscribe(claims.role, claims.sub);
});

// Local development only (DEV_TOKENS=1): tokens for the demo, see dev-tokens.ts.
app.route("/v1/dev", devTokens);

app.notFound((c) => errorResponse(new RelayError("not_found", `no route ${c.req.method} ${new URL(c.req.url).pathname}`)));
app.onError((e) => errorResponse(e));

export default app;
