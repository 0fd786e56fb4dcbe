import { RelayError } from "./errors.ts";
import { isName } from "../protocol/validate.ts";
import { defaultDriverKind, openDriver } from "./drivers/index.ts";
import { lockDatabaseFile, type FileLock } from "./file-lock.ts";
import { migrateAtOpen } from "./migrate.ts";
import { Replica } from "./replica.ts";
import { RelayFunctions } from "./functions.ts";
import * as store from "./store.ts";
import { rowidKeyed, Tables } from "./tables.ts";
import { TokenSource } from "./token.ts";
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
  if (opts.clientId !== undefined && !isName(opts.clientId)) throw new RelayError("invalid_name", "clientId must match [A-Za-z0-9_-]{1,64}");
  if (opts.migrations && opts.schema) throw new RelayError("bad_request", "give `migrations` or `schema` (one version), not both");
  const tokens = new TokenSource(opts.token);
  await tokens.init();
  const claims = tokens.claims();
  const kind = opts.driver ?? defaultDriverKind();
  const path = opts.path ?? ":memory:";
  const lock: FileLock | undefined = kind === "node" && path !== ":memory:" && path !== "" ? lockDatabaseFile(path) : undefined;
  let d;
  try {
    d = await openDriver(kind, path);
  } catch (e) {
    lock?.release();
    throw e;
  }
  // Migrations run with foreign keys off, as the sync step runs the log's
  // (a DROP TABLE must not cascade on some replicas only); the pragma is a
  // no-op inside a transaction.
  const fk = store.foreignKeys(d);
  if (fk) store.setForeignKeys(d, false);
  try {
    d.exec("BEGIN IMMEDIATE");
    store.migrate(d);
    // The client id is the database's, made with it: a new database (a
    // `:memory:` one each time it opens) is a new replica with its own cseqs.
    // Never the token's sub: one person has many devices, and a database
    // recreated under an old id would reuse cseqs the log already holds.
    const persisted = store.getMeta(d, "client_id") as string | null;
    if (persisted && opts.clientId && persisted !== opts.clientId) {
      throw new RelayError("bad_request", `this database belongs to client "${persisted}", not "${opts.clientId}"`);
    }
    const clientId = persisted ?? opts.clientId ?? randomClientId();
    if (!persisted) store.setMeta(d, "client_id", clientId);
    // Before the migrations: the pending writes they re-apply are replayed under relay_replaying().
    const fns = RelayFunctions.install(d);
    const tables = new Tables(d, opts.local);
    const migrations = opts.migrations ?? (opts.schema ? [opts.schema] : []);
    const dropped = migrateAtOpen(d, migrations, clientId, opts.conflicts ?? {}, { fns, tables });
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
    d.exec("COMMIT");
    if (fk) store.setForeignKeys(d, true);
    const replica = new Replica(d, clientId, opts, opts.readOnly ?? claims?.role === "read", { fns, tables }, tokens, { warning: warnings, dropped }, lock);
    if (opts.live) replica.setLive(true);
    return replica;
  } catch (e) {
    if (d.inTransaction) d.exec("ROLLBACK");
    d.close();
    lock?.release();
    throw e;
  }
}

/** 128 random bits, base64url (22 characters). */
export function randomClientId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
