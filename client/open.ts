import { RelayError } from "./errors.ts";
import { isName } from "../protocol/validate.ts";
import { readTokenClaims } from "../protocol/token.ts";
import { defaultDriverKind, openDriver } from "./drivers/index.ts";
import { migrateAtOpen } from "./migrate.ts";
import { Replica } from "./replica.ts";
import { RelayFunctions } from "./functions.ts";
import * as store from "./store.ts";
import { rowidKeyed, Tables } from "./tables.ts";
import { guardAfterDdl } from "./triggers.ts";
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
  if (opts.migrations && opts.schema) throw new RelayError("bad_request", "give `migrations` or `schema` (one version), not both");
  const d = await openDriver(opts.driver ?? defaultDriverKind(), opts.path ?? ":memory:");
  // Migrations run with foreign keys off, as the sync step runs the log's
  // (a DROP TABLE must not cascade on some replicas only); the pragma is a
  // no-op inside a transaction.
  const fk = store.foreignKeys(d);
  if (fk) store.setForeignKeys(d, false);
  try {
    d.exec("BEGIN IMMEDIATE");
    store.migrate(d);
    // Before the migrations: the pending writes they re-apply are replayed under relay_replaying().
    const fns = RelayFunctions.install(d);
    const tables = new Tables(d, opts.local);
    const migrations = opts.migrations ?? (opts.schema ? [opts.schema] : []);
    const dropped = migrateAtOpen(d, migrations, String(store.getMeta(d, "client_id") ?? ""), opts.conflicts ?? {}, { fns, tables });
    // Triggers made by DDL through query(), or before this library guarded them.
    guardAfterDdl(d, tables);
    const noPk = tables.replicated.filter((t) => !store.tableInfo(d, t)!.pk.some((p) => p > 0));
    if (noPk.length > 0) {
      throw new RelayError("no_primary_key", `tables without a PRIMARY KEY cannot replicate (the session extension ignores them): ${noPk.join(", ")}; declare them in \`local\` if they should not`);
    }
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
    if (fk) store.setForeignKeys(d, true);
    const replica = new Replica(d, clientId, opts, opts.readOnly ?? claims?.role === "read", { fns, tables }, { warning: warnings, dropped });
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
