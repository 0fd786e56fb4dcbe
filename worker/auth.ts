import { changesetTables, validateChangeset, type TableHeader } from "../protocol/changeset.ts";
import { RelayError } from "../protocol/errors.ts";
import type { PushRequest } from "../protocol/messages.ts";
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

/**
 * What every push must pass, over HTTP or a socket, before the log sees it:
 * the role and every changeset parsing completely (the error names the
 * entry). Whether the client id belongs to the token's sub is the log's to
 * say (worker/identity.ts): it holds the bindings.
 */
export function checkPush(claims: Pick<TokenClaims, "role">, req: Pick<PushRequest, "entries">): void {
  checkEach(claims, req, validateChangeset);
}

/**
 * checkPush, also returning each entry's table headers, read by the same
 * validating scan: the log object checks them against the schema without
 * scanning the bytes again (an HTTP push's entries may be large).
 */
export function checkPushTables(claims: Pick<TokenClaims, "role">, req: Pick<PushRequest, "entries">): TableHeader[][] {
  return checkEach(claims, req, changesetTables);
}

function checkEach<T>(claims: Pick<TokenClaims, "role">, req: Pick<PushRequest, "entries">, check: (bytes: Uint8Array) => T): T[] {
  if (!roleAtLeast(claims.role, "write")) throw new RelayError("forbidden", `token role "${claims.role}" cannot write`);
  return req.entries.map((e, i) => {
    try {
      return check(e.changeset);
    } catch (err) {
      if (err instanceof RelayError) throw new RelayError(err.code, `entries[${i}] (cseq ${e.cseq}): ${err.message}`);
      throw err;
    }
  });
}
