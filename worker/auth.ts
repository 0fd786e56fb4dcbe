import { RelayError } from "../protocol/errors.ts";
import { roleAtLeast, verifyToken, type Role, type TokenClaims } from "../protocol/token.ts";
import type { Env } from "./env.ts";
import { publicRole, verifyKeys } from "./keys.ts";

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
    const pub = publicRole(env);
    if (!pub) throw new RelayError("unauthorized", "missing token");
    claims = { db, role: pub, sub: "anonymous" };
  } else {
    claims = await verifyToken(token, verifyKeys(env));
  }
  if (claims.db !== "*" && claims.db !== db) throw new RelayError("forbidden", `token is for database "${claims.db}", not "${db}"`);
  if (!roleAtLeast(claims.role, need)) throw new RelayError("forbidden", `token role "${claims.role}" cannot ${need}`);
  return claims;
}
