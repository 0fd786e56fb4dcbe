import { RelayError } from "../protocol/errors.ts";
import type { Role } from "../protocol/token.ts";
import type { Sql } from "./log-store.ts";

/**
 * Client ids belong to people. A replica's client id is random (the client
 * makes it with its database); the first sub to push under it owns it from
 * then on, so one person's five devices each write under their own id and
 * nobody can write under another's. Admin tokens act for any client and
 * bind none (an operator repairing a log must not take a client id away from
 * its owner). Runs inside the push's transaction: a refused push writes nothing.
 */
export function bindClient(sql: Sql, client: string, who: { sub: string; role: Role }, now: number): void {
  if (who.role === "admin") return;
  const owner = sql.exec<{ sub: string }>("SELECT sub FROM relay_client WHERE client = ?", client).toArray()[0]?.sub;
  if (owner === undefined) {
    sql.exec("INSERT INTO relay_client(client, sub, since) VALUES (?, ?, ?)", client, who.sub, now);
    return;
  }
  if (owner !== who.sub) {
    throw new RelayError("forbidden", `client id "${client}" belongs to another user than the token's sub "${who.sub}"`);
  }
}
