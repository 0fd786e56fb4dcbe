import { Hono } from "hono";
import { RelayError } from "../protocol/errors.ts";
import { sha256Hex } from "../protocol/hash.ts";
import { ROLES, type Role } from "../protocol/token.ts";
import { name } from "../protocol/validate.ts";
import { authorize } from "./auth.ts";
import type { Env } from "./env.ts";
import { unwrap } from "./errors.ts";
import * as store from "./log-store.ts";
import * as snaps from "./snapshot-store.ts";

/**
 * Snapshot routes (the Worker side) and the calls they make on the
 * database's object (the object side; ChangesetLog.snapshots delegates here).
 * Metadata travels as JSON, parts as raw bytes.
 *
 *   POST /v1/db/:db/snapshots                   {seq, version, size, hash} → {id, parts, partBytes}   SNAPSHOT_ROLE
 *   PUT  /v1/db/:db/snapshots/:id/parts/:idx    part bytes                                            SNAPSHOT_ROLE
 *   POST /v1/db/:db/snapshots/:id/commit        → the published snapshot (hash checked)               SNAPSHOT_ROLE
 *   GET  /v1/db/:db/snapshot                    newest usable snapshot + schema versions up to it       read
 *   GET  /v1/db/:db/snapshots/:id/parts/:idx    part bytes                                            read
 *   POST /v1/db/:db/hashes                      {seq, hash}: a replica's state hash at seq            read
 *   GET  /v1/db/:db/status                      head, retained log, snapshots, counts, sockets        admin
 *   POST /v1/db/:db/compact                     trim behind the newest agreed snapshot                admin
 */
export type SnapshotCall =
  | { op: "begin"; meta: snaps.SnapshotMeta }
  | { op: "part"; id: number; idx: number; data: Uint8Array }
  | { op: "commit"; id: number }
  | { op: "latest"; client?: string | undefined; at?: number | undefined }
  | { op: "read"; id: number; idx: number }
  | { op: "report"; seq: number; hash: string }
  | { op: "status" }
  | { op: "compact" };

/** The relay's settings for snapshots and retention, with their defaults (README "Lifetime of a database"). */
export function settings(env: Env): snaps.Retention & { role: Role; every: number } {
  const int = (v: string | undefined, d: number) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : d);
  return {
    role: ROLES.includes(env.SNAPSHOT_ROLE as Role) ? (env.SNAPSHOT_ROLE as Role) : "write",
    quorum: Math.max(1, int(env.SNAPSHOT_QUORUM, 1)),
    entries: int(env.RETAIN_ENTRIES, 10_000),
    ms: int(env.RETAIN_SECONDS, 86_400) * 1000,
    every: int(env.SNAPSHOT_EVERY, 10_000),
  };
}

/**
 * Whether to ask connected replicas for a snapshot at `head`: SNAPSHOT_EVERY
 * entries since the newest one (or since the last time we asked). Returns the
 * role the one asked to build it needs.
 */
export function snapshotDue(sql: store.Sql, env: Env, head: number, asked: number): Role | undefined {
  const { every, role } = settings(env);
  if (every === 0) return undefined;
  return head - Math.max(snaps.newestSeq(sql), asked) >= every ? role : undefined;
}

export interface SnapshotHost {
  sql: store.Sql;
  env: Env;
  transaction<T>(fn: () => T): T;
  sockets(): number;
}

/** On the object: one snapshot call by `sub`, already authorized by the Worker. */
export async function call(host: SnapshotHost, c: SnapshotCall, sub: string): Promise<unknown> {
  const { sql } = host;
  const now = Date.now();
  const cfg = settings(host.env);
  switch (c.op) {
    case "begin":
      return host.transaction(() => snaps.begin(sql, c.meta, sub, now, store.head(sql)));
    case "part":
      return host.transaction(() => snaps.putPart(sql, c.id, c.idx, c.data, sub)), null;
    case "commit": {
      const bytes = host.transaction(() => snaps.seal(sql, c.id, sub));
      const actual = await sha256Hex(bytes);
      const info = host.transaction(() => snaps.publish(sql, c.id, sub, actual, now));
      host.transaction(() => snaps.compact(sql, store.head(sql), now, cfg));
      return info;
    }
    case "latest": {
      const s = snaps.latest(sql, 1, c.at);
      if (!s) throw new RelayError("not_found", "this database has no snapshot yet");
      const schema = sql.exec<{ seq: number; version: number; statements: string }>("SELECT seq, version, statements FROM relay_schema WHERE seq <= ? ORDER BY seq", s.seq)
        .toArray().map((r) => ({ seq: r.seq, version: r.version, statements: JSON.parse(r.statements) as string[] }));
      const clientCseq = c.client === undefined ? 0 : snaps.clientFloor(sql, c.client);
      return { ...s, schema, clientCseq, trimmed: snaps.trimmed(sql), head: store.head(sql) };
    }
    case "read":
      return snaps.readPart(sql, c.id, c.idx);
    case "report":
      host.transaction(() => snaps.report(sql, c.seq, sub, c.hash, now));
      return snaps.list(sql).filter((s) => s.seq === c.seq);
    case "status":
      return { head: store.head(sql), trimmed: snaps.trimmed(sql), snapshots: snaps.list(sql), ...snaps.usage(sql), sockets: host.sockets(), settings: cfg };
    case "compact":
      return host.transaction(() => snaps.compact(sql, store.head(sql), now, cfg));
  }
}

// ---- Worker routes ----

export const routes = new Hono<{ Bindings: Env }>();

async function run(c: { env: Env; req: { raw: Request; param(k: string): string } }, need: Role | "snapshot", call: SnapshotCall): Promise<unknown> {
  const db = name(c.req.param("db"), "database name");
  const role = need === "snapshot" ? settings(c.env).role : need;
  const claims = await authorize(c.env, c.req.raw, db, role);
  const log = c.env.LOG.get(c.env.LOG.idFromName(db));
  return unwrap(await log.snapshots(call, claims.sub));
}

const num = (s: string | undefined, what: string): number => {
  if (s === undefined || !/^\d{1,15}$/.test(s)) throw new RelayError("bad_request", `${what} must be a non-negative integer`);
  return Number(s);
};

async function json(req: Request): Promise<Record<string, unknown>> {
  try {
    const v = (await req.json()) as unknown;
    if (v && typeof v === "object") return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new RelayError("bad_request", "the body must be a JSON object");
}

routes.post("/v1/db/:db/snapshots", async (c) => {
  const b = await json(c.req.raw);
  const meta = { seq: num(String(b.seq), "seq"), version: num(String(b.version), "version"), size: num(String(b.size), "size"), hash: String(b.hash) };
  return c.json(await run(c, "snapshot", { op: "begin", meta }));
});

routes.put("/v1/db/:db/snapshots/:id/parts/:idx", async (c) => {
  const declared = Number(c.req.header("content-length") ?? NaN);
  if (declared > snaps.SNAPSHOT_PART_BYTES) throw new RelayError("payload_too_large", `a part is at most ${snaps.SNAPSHOT_PART_BYTES} bytes`);
  const data = new Uint8Array(await c.req.arrayBuffer());
  if (data.byteLength > snaps.SNAPSHOT_PART_BYTES) throw new RelayError("payload_too_large", `a part is at most ${snaps.SNAPSHOT_PART_BYTES} bytes`);
  await run(c, "snapshot", { op: "part", id: num(c.req.param("id"), "id"), idx: num(c.req.param("idx"), "idx"), data });
  return c.json({ ok: true });
});

routes.post("/v1/db/:db/snapshots/:id/commit", async (c) => c.json(await run(c, "snapshot", { op: "commit", id: num(c.req.param("id"), "id") })));

routes.get("/v1/db/:db/snapshot", async (c) => {
  const client = c.req.query("client");
  const at = c.req.query("at");
  return c.json(await run(c, "read", { op: "latest", client: client === undefined ? undefined : name(client, "client"), at: at === undefined ? undefined : num(at, "at") }));
});

routes.get("/v1/db/:db/snapshots/:id/parts/:idx", async (c) => {
  const bytes = (await run(c, "read", { op: "read", id: num(c.req.param("id"), "id"), idx: num(c.req.param("idx"), "idx") })) as Uint8Array;
  return new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { "content-type": "application/octet-stream" } });
});

routes.post("/v1/db/:db/hashes", async (c) => {
  const b = await json(c.req.raw);
  return c.json(await run(c, "read", { op: "report", seq: num(String(b.seq), "seq"), hash: String(b.hash) }));
});

routes.get("/v1/db/:db/status", async (c) => c.json(await run(c, "admin", { op: "status" })));
routes.post("/v1/db/:db/compact", async (c) => c.json(await run(c, "admin", { op: "compact" })));
