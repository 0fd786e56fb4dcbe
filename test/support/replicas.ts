import { openReplica, type Replica, type ReplicaOptions } from "../../client/index.ts";
import type { DriverKind } from "../../client/drivers/types.ts";
import type { TestRelay } from "./relay.ts";

export const TODO_SCHEMA = ["CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, note TEXT)"];

/** A replica of `db` with a write token whose sub is its client id. */
const opened = new Set<Replica>();

/** Close every replica `replica()` opened (a failed test must not leave live sockets reconnecting forever). */
export async function closeReplicas(): Promise<void> {
  await Promise.all([...opened].map((r) => r.close()));
  opened.clear();
}

export async function replica(relay: TestRelay, db: string, clientId: string, driver: DriverKind, opts: Partial<ReplicaOptions> = {}): Promise<Replica> {
  const r = await openReplica({
    url: relay.url,
    db,
    token: await relay.token("write", clientId, db),
    clientId,
    driver,
    // The default schema, unless the test gives its versions.
    ...(opts.migrations ? {} : { schema: TODO_SCHEMA }),
    backoff: { baseMs: 5, capMs: 50 },
    ...opts,
  });
  opened.add(r);
  return r;
}

/** Every replicated table, ordered, as JSON: equal dumps mean equal data. */
export async function dump(r: Replica): Promise<string> {
  const tables = await r.query<{ name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_relay\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name");
  const out: Record<string, unknown[]> = {};
  for (const { name } of tables) out[name] = await r.query(`SELECT * FROM "${name}" ORDER BY 1`);
  return JSON.stringify(out, (_k, v) => (typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString("hex") : v));
}
