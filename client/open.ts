import { RelayError } from "./errors.ts";
import { isName } from "../protocol/validate.ts";
import { readTokenClaims } from "../protocol/token.ts";
import { defaultDriverKind, openDriver } from "./drivers/index.ts";
import { Replica } from "./replica.ts";
import { RelayFunctions } from "./functions.ts";
import * as store from "./store.ts";
import { rowidKeyed, Tables } from "./tables.ts";
import { guardTriggers } from "./triggers.ts";
import type { ReplicaOptions, ReplicaWarning } from "./types.ts";

/**
 * Open (or create) a local replica of database `db` on the relay at `url`.
 *
 * @example
 * const replica = await openReplica({ url, db: "todos", token, schema: ["CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT)"] });
 * await replica.exec("INSERT INTO todo VALUES (?, ?)", ["1", "milk"]);
 * await replica.sync();
 */
export async function openReplica(opts: ReplicaOptions): Promise<Replica> {
  if (!isName(opts.db)) throw new RelayError("invalid_name", `db must match [A-Za-z0-9_-]{1,64}`);
  const claims = opts.token ? readTokenClaims(opts.token) : undefined;
  const d = await openDriver(opts.driver ?? defaultDriverKind(), opts.path ?? ":memory:");
  try {
    d.exec("BEGIN IMMEDIATE");
    store.migrate(d);
    // Before the schema: its DEFAULTs and seed rows may call relay_id().
    const fns = RelayFunctions.install(d);
    for (const stmt of opts.schema ?? []) d.exec(stmt);
    const tables = new Tables(d, opts.local).at(store.schemaVersion(d));
    const noPk = tables.replicated.filter((t) => !store.tableInfo(d, t)!.pk.some((p) => p > 0));
    if (noPk.length > 0) {
      throw new RelayError("no_primary_key", `tables without a PRIMARY KEY cannot replicate (the session extension ignores them): ${noPk.join(", ")}; declare them in \`local\` if they should not`);
    }
    guardTriggers(d, (t) => tables.isLocal(t));
    tables.at(store.schemaVersion(d));
    const warnings = rowidKeyed(d, tables.replicated).map((table): ReplicaWarning => ({
      code: "rowid_key",
      table,
      message:
        `table "${table}": its key is INTEGER PRIMARY KEY, which SQLite fills with max(id)+1 when an INSERT gives none, so replicas writing offline pick the same ids and one row replaces the other. ` +
        `Insert relay_id() as the id (INSERT INTO "${table}"(id, ...) VALUES (relay_id(), ...)), or declare the key with DEFAULT (relay_id()) in a WITHOUT ROWID table.`,
    }));
    fns.save(d);
    const persisted = store.getMeta(d, "client_id") as string | null;
    const wanted = opts.clientId ?? (claims?.role !== "admin" && isName(claims?.sub) ? claims.sub : undefined);
    if (persisted && wanted && persisted !== wanted) {
      throw new RelayError("bad_request", `this database belongs to client "${persisted}", not "${wanted}"`);
    }
    const clientId = persisted ?? wanted ?? randomId();
    if (!isName(clientId)) throw new RelayError("invalid_name", "clientId must match [A-Za-z0-9_-]{1,64}");
    if (!persisted) store.setMeta(d, "client_id", clientId);
    d.exec("COMMIT");
    const replica = new Replica(d, clientId, opts, opts.readOnly ?? claims?.role === "read", { fns, tables }, warnings);
    if (opts.live) replica.setLive(true);
    return replica;
  } catch (e) {
    if (d.inTransaction) d.exec("ROLLBACK");
    d.close();
    throw e;
  }
}

function randomId(): string {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
