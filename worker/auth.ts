import { validateChangeset } from "../protocol/changeset.ts";
import { RelayError } from "../protocol/errors.ts";
import type { PushRequest } from "../protocol/messages.ts";
import { roleAtLeast, ROLES, verifyToken, type Role, type TokenClaims } from "../protocol/token.ts";
import { relaySecret } from "./config.ts";
import type { Env } from "./env.ts";

/**
 * Who is calling, for database `db`, needing at least `need`. Browsers cannot
 * set headers on WebSockets, so the socket route (only) also takes a `token`
 * query parameter; the trade-off is that URLs can land in access logs (see
 * README). HTTP routes take the header only.
 */
export async function authorize(env: Env, request: Request, db: string, need: Role, opts: { queryToken?: boolean } = {}): Promise<TokenClaims> {
  const header = request.headers.get("authorization");
  const query = opts.queryToken ? new URL(request.url).searchParams.get("token") : null;
  const token = header ? /^Bearer\s+(\S+)$/i.exec(header)?.[1] : query ?? undefined;
  if (header && !token) throw new RelayError("unauthorized", "Authorization header must be 'Bearer <token>'");
  let claims: TokenClaims;
  if (token === undefined) {
    const pub = env.PUBLIC_ROLE as Role | undefined;
    if (!pub || !ROLES.includes(pub)) throw new RelayError("unauthorized", "missing token");
    claims = { db, role: pub, sub: "anonymous" };
  } else {
    claims = await verifyToken(token, relaySecret(env));
  }
  if (claims.db !== "*" && claims.db !== db) throw new RelayError("forbidden", `token is for database "${claims.db}", not "${db}"`);
  if (!roleAtLeast(claims.role, need)) throw new RelayError("forbidden", `token role "${claims.role}" cannot ${need}`);
  return claims;
}

/**
 * What every push must pass, over HTTP or a socket, before the log sees it:
 * the role, the client id matching the token, and every changeset parsing
 * completely (the error names the entry).
 */
export function checkPush(claims: Pick<TokenClaims, "role" | "sub">, req: Pick<PushRequest, "client" | "entries">): void {
  if (!roleAtLeast(claims.role, "write")) throw new RelayError("forbidden", `token role "${claims.role}" cannot write`);
  if (claims.role !== "admin" && req.client !== claims.sub) {
    throw new RelayError("forbidden", `client "${req.client}" does not match the token's sub "${claims.sub}"`);
  }
  req.entries.forEach((e, i) => {
    try {
      validateChangeset(e.changeset);
    } catch (err) {
      if (err instanceof RelayError) throw new RelayError(err.code, `entries[${i}] (cseq ${e.cseq}): ${err.message}`);
      throw err;
    }
  });
}
