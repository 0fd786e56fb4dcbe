import { Hono } from "hono";
import { decode, encode } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { parsePullQuery, parsePushRequest, type HealthResponse } from "../protocol/messages.ts";
import { MAX_PARTED_ENTRY_BYTES, maxEntryBytes, PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX } from "../protocol/limits.ts";
import { name, nonNegativeInt, positiveInt } from "../protocol/validate.ts";
import { acceptsGzip } from "../protocol/compression.ts";
import { MIN_PROTOCOL_VERSION, MSGPACK, PACKAGE_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { authorize } from "./auth.ts";
import { checkPushTables } from "./push-check.ts";
import { checkSocketOrigin, corsHeaders } from "./cors.ts";
import { discardBody, withPushBody } from "./body.ts";
import { compressedPage } from "./compress.ts";
import { FrontDoor } from "./admission.ts";
import { toPushArgs } from "./push-args.ts";
import { bodyLimit, partBytes } from "./config.ts";
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
    limits: { maxEntryBytes: maxEntryBytes(bodyLimit(c.env)), partBytes: partBytes(c.env), maxPartedEntryBytes: MAX_PARTED_ENTRY_BYTES },
  } satisfies HealthResponse),
);

function logFor(env: Env, db: string) {
  return env.LOG.get(env.LOG.idFromName(db));
}


const frontDoor = new FrontDoor();

/**
 * A write's body (a push, a part), read once the front door lets its caller
 * in (else drained, up to `limit`, and refused) and handed to `send`, whose
 * `overloaded` answers the front door remembers; the answer goes back as msgpack.
 */
async function write(req: Request, db: string, sub: string, limit: number, send: (bytes: Uint8Array) => Promise<unknown>): Promise<Response> {
  try {
    frontDoor.check(db, sub);
  } catch (e) {
    await discardBody(req, limit);
    throw e;
  }
  // The object has copied what it was sent (RPC serializes its arguments) by the time `send` resolves.
  const res = await withPushBody(req, limit, async (bytes) => {
    try {
      return await send(bytes);
    } catch (e) {
      frontDoor.note(db, sub, e);
      throw e;
    }
  });
  return new Response(encode(res), { headers: { "content-type": MSGPACK } });
}

app.post("/v1/db/:db/push", async (c) => {
  const db = name(c.req.param("db"), "database name");
  const claims = await authorize(c.env, c.req.raw, db, "write");
  const type = c.req.header("content-type") ?? "";
  if (!type.startsWith(MSGPACK)) throw new RelayError("unsupported_media_type", `push bodies must be ${MSGPACK}`);
  return write(c.req.raw, db, claims.sub, bodyLimit(c.env), async (bytes) => {
    const body = parsePushRequest(decode(bytes));
    const tables = checkPushTables(claims, body);
    return unwrap(await logFor(c.env, db).push(body.client, toPushArgs(body.entries, tables), { role: claims.role, sub: claims.sub }, body.schema));
  });
});

const int = (s: string | undefined, what: string) => nonNegativeInt(/^\d{1,15}$/.test(s ?? "") ? Number(s) : NaN, what);

/**
 * One part of an entry larger than one request (worker/entry-parts.ts): the
 * raw changeset bytes `idx × partBytes …` (gzip allowed), `size` the whole
 * changeset's, `v` its schema version. Answers like a push: `acks` holds the
 * entry's once the log has it (after its last part), else nothing.
 */
app.put("/v1/db/:db/push/:client/:cseq/parts/:idx", async (c) => {
  const db = name(c.req.param("db"), "database name");
  const claims = await authorize(c.env, c.req.raw, db, "write");
  const client = name(c.req.param("client"), "client");
  const part = { cseq: positiveInt(int(c.req.param("cseq"), "cseq"), "cseq"), idx: int(c.req.param("idx"), "idx"), size: int(c.req.query("size"), "size"), v: int(c.req.query("v") ?? "0", "v"), ...(c.req.query("part") === undefined ? {} : { part: int(c.req.query("part"), "part") }) };
  // Any part size a request carries (entry-parts.ts: each upload keeps its own).
  return write(c.req.raw, db, claims.sub, maxEntryBytes(bodyLimit(c.env)), async (data) =>
    unwrap(await logFor(c.env, db).pushPart(client, { ...part, data }, { role: claims.role, sub: claims.sub })));
});

/** Part `idx` of log entry `seq`, raw (a pull with `parts=1` lists entries larger than a part by size). */
app.get("/v1/db/:db/entries/:seq/parts/:idx", async (c) => {
  const db = name(c.req.param("db"), "database name");
  await authorize(c.env, c.req.raw, db, "read");
  return compressible(await logFor(c.env, db).entryPart(int(c.req.param("seq"), "seq"), int(c.req.param("idx"), "idx")), c.req.header("accept-encoding"));
});

app.get("/v1/db/:db/pull", async (c) => {
  const db = name(c.req.param("db"), "database name");
  await authorize(c.env, c.req.raw, db, "read");
  const q = parsePullQuery(c.req.query("after"), c.req.query("limit"), PULL_LIMIT_MAX, PULL_LIMIT_DEFAULT);
  return compressible(await logFor(c.env, db).pull(q.after, q.limit, c.req.query("parts") === "1"), c.req.header("accept-encoding"));
});

/** Compressed here, in the stateless Worker, not in the database's object (worker/compress.ts). */
async function compressible(res: Response, acceptEncoding: string | undefined): Promise<Response> {
  return res.ok && acceptsGzip(acceptEncoding) ? compressedPage(res) : res;
}

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
