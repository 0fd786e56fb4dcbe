import { RelayError } from "./errors.ts";
import { isName } from "../protocol/validate.ts";
import { defaultDriverKind, openDriver } from "./drivers/index.ts";
import { lockDatabaseFile, type FileLock } from "./file-lock.ts";
import { Replica } from "./replica.ts";
import * as store from "./store.ts";
import { TokenSource } from "./token.ts";
import type { ReplicaOptions } from "./types.ts";

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
  try {
    d.exec("BEGIN IMMEDIATE");
    store.migrate(d);
    for (const stmt of opts.schema ?? []) d.exec(stmt);
    const noPk = store.userTables(d).filter((t) => !store.tableInfo(d, t)!.pk.some((p) => p > 0));
    if (noPk.length > 0) {
      throw new RelayError("no_primary_key", `tables without a PRIMARY KEY cannot replicate (the session extension ignores them): ${noPk.join(", ")}`);
    }
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
    d.exec("COMMIT");
    const replica = new Replica(d, clientId, opts, opts.readOnly ?? claims?.role === "read", tokens, lock);
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
