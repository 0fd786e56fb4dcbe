import { changesetTables, validateChangeset, type TableHeader } from "../protocol/changeset.ts";
import { RelayError } from "../protocol/errors.ts";
import type { PushRequest } from "../protocol/messages.ts";
import { roleAtLeast, type TokenClaims } from "../protocol/token.ts";

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
