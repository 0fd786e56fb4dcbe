import { Hono } from "hono";
import { decode, encode } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { parsePullQuery, parsePushRequest, type HealthResponse } from "../protocol/messages.ts";
import { maxEntryBytes, PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX } from "../protocol/limits.ts";
import { name } from "../protocol/validate.ts";
import { acceptsGzip } from "../protocol/compression.ts";
import { MIN_PROTOCOL_VERSION, MSGPACK, PACKAGE_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { authorize, checkPush } from "./auth.ts";
import { checkSocketOrigin, corsHeaders } from "./cors.ts";
import { discardBody, withPushBody } from "./body.ts";
import { compressedPage } from "./compress.ts";
import { FrontDoor } from "./admission.ts";
import { toPushArgs } from "./push-args.ts";
import { bodyLimit } from "./config.ts";
import { devTokens } from "./dev-tokens.ts";
import { errorResponse, unwrap } from "./errors.ts";
import type { Env } from "./env.ts";

import { subscribeRequest } from "./log.ts";
import { routes as snapshotRoutes } from "./snapshots.ts";

export { ChangesetLog } from "./log.ts";

/**
 * The front door: routing, auth, name checks, size limits and validation of
 * every argument happen here, so the database's Durable Object only ever sees
 * calls that passed, as RPC arguments it does not decode again (the socket
 * upgrade is the one fetch: see ChangesetLog.fetch).
 */
const app = new Hono<{ Bindings: Env }>();

app.use("/v1/*", corsHeaders());

app.get("/v1/health", (c) =>
  c.json({
    ok: true,
    version: PACKAGE_VERSION,
    protocol: { min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION },
    limits: { maxEntryBytes: maxEntryBytes(bodyLimit(c.env)) },
  } satisfies HealthResponse),
);

function logFor(env: Env, db: string) {
  return env.LOG.get(env.LOG.idFromName(db));
}


const frontDoor = new FrontDoor();

app.post("/v1/db/:db/push", async (c) => {
  const db = name(c.req.param("db"), "database name");
  const claims = await authorize(c.env, c.req.raw, db, "write");
  try {
    frontDoor.check(db, claims.sub);
  } catch (e) {
    await discardBody(c.req.raw, bodyLimit(c.env));
    throw e;
  }
  const type = c.req.header("content-type") ?? "";
  if (!type.startsWith(MSGPACK)) throw new RelayError("unsupported_media_type", `push bodies must be ${MSGPACK}`);
  // The object has copied the entries (RPC serializes its arguments) by the time push resolves.
  const res = await withPushBody(c.req.raw, bodyLimit(c.env), async (bytes) => {
    const body = parsePushRequest(decode(bytes));
    checkPush(claims, body);
    try {
      return unwrap(await logFor(c.env, db).push(body.client, toPushArgs(body.entries), { role: claims.role, sub: claims.sub }, body.schema));
    } catch (e) {
      frontDoor.note(db, claims.sub, e);
      throw e;
    }
  });
  return new Response(encode(res), { headers: { "content-type": MSGPACK } });
});

app.get("/v1/db/:db/pull", async (c) => {
  const db = name(c.req.param("db"), "database name");
  await authorize(c.env, c.req.raw, db, "read");
  const q = parsePullQuery(c.req.query("after"), c.req.query("limit"), PULL_LIMIT_MAX, PULL_LIMIT_DEFAULT);
  const res = await logFor(c.env, db).pull(q.after, q.limit);
  if (!res.ok || !acceptsGzip(c.req.header("accept-encoding"))) return res;
  // Compressed here, in the stateless Worker, not in the database's object (worker/compress.ts).
  return compressedPage(res);
});

app.get("/v1/db/:db/ws", async (c) => {
  const db = name(c.req.param("db"), "database name");
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new RelayError("upgrade_required", "this route only speaks WebSocket (send Upgrade: websocket)");
  }
  checkSocketOrigin(c.req.raw, c.env);
  const claims = await authorize(c.env, c.req.raw, db, "read", { queryToken: true });
  return logFor(c.env, db).fetch(subscribeRequest(claims));
});

app.route("/", snapshotRoutes);

// Local development only (DEV_TOKENS=1): tokens for the demo, see dev-tokens.ts.
app.route("/v1/dev", devTokens);

app.notFound((c) => errorResponse(new RelayError("not_found", `no route ${c.req.method} ${new URL(c.req.url).pathname}`)));
app.onError((e) => errorResponse(e));

export default app;
