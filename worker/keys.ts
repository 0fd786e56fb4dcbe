import { createLocalJWKSet, type JSONWebKeySet } from "jose";
import { RelayError } from "../protocol/errors.ts";
import type { Role, VerifyKeys } from "../protocol/token.ts";

/**
 * The relay's token configuration, from its bindings (secrets and [vars]):
 *
 *   RELAY_SECRET    HS256 secret for tokens without a `kid`
 *   RELAY_SECRETS   HS256 secrets by kid, JSON: {"2026-12": "…", "2026-11": "…"}
 *   RELAY_JWKS      public keys (ES256, EdDSA, RS256) as a JWKS, JSON: {"keys": [...]}
 *                   given as configuration: the relay fetches nothing
 *   TOKEN_ISSUER    when set, tokens must carry this `iss`
 *   TOKEN_AUDIENCE  when set, tokens must carry this `aud`
 *
 * At least one key source must be set. A missing or unreadable one is
 * `misconfigured`: no retry helps until the operator fixes it.
 */
export interface KeyEnv {
  RELAY_SECRET?: string | undefined;
  RELAY_SECRETS?: string | undefined;
  RELAY_JWKS?: string | undefined;
  TOKEN_ISSUER?: string | undefined;
  TOKEN_AUDIENCE?: string | undefined;
}

/** Parsed once per configuration (an isolate serves many requests with the same bindings). */
let cached: { source: string; keys: VerifyKeys } | undefined;

export function verifyKeys(env: KeyEnv): VerifyKeys {
  const source = JSON.stringify([env.RELAY_SECRET, env.RELAY_SECRETS, env.RELAY_JWKS, env.TOKEN_ISSUER, env.TOKEN_AUDIENCE]);
  if (cached?.source === source) return cached.keys;
  if (!env.RELAY_SECRET && !env.RELAY_SECRETS && !env.RELAY_JWKS) {
    throw misconfigured(
      "the relay has no token keys: set RELAY_SECRET (`wrangler secret put RELAY_SECRET`; locally RELAY_SECRET=... in .dev.vars), " +
        "RELAY_SECRETS (HS256 secrets by kid, JSON) or RELAY_JWKS (public keys, a JWKS as JSON)",
    );
  }
  const keys: VerifyKeys = {
    ...(env.RELAY_SECRET ? { secret: env.RELAY_SECRET } : {}),
    ...(env.RELAY_SECRETS ? { secrets: parseSecrets(env.RELAY_SECRETS) } : {}),
    ...(env.RELAY_JWKS ? { jwks: parseJwks(env.RELAY_JWKS) } : {}),
    ...(env.TOKEN_ISSUER ? { issuer: env.TOKEN_ISSUER } : {}),
    ...(env.TOKEN_AUDIENCE ? { audience: env.TOKEN_AUDIENCE } : {}),
  };
  cached = { source, keys };
  return keys;
}

function parseSecrets(json: string): Record<string, string> {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    v = undefined;
  }
  const ok = typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every((s) => typeof s === "string" && s.length > 0);
  if (!ok) throw misconfigured('RELAY_SECRETS must be a JSON object of kid → secret, e.g. {"2026-12":"<secret>"}');
  return v as Record<string, string>;
}

function parseJwks(json: string): ReturnType<typeof createLocalJWKSet> {
  try {
    const jwks = JSON.parse(json) as JSONWebKeySet;
    for (const k of jwks.keys ?? []) {
      if ("d" in k || k.kty === "oct") throw new Error("it holds a private or secret key: give the relay public keys only");
    }
    return createLocalJWKSet(jwks);
  } catch (e) {
    throw misconfigured(`RELAY_JWKS must be a JSON Web Key Set of public keys, {"keys":[...]}: ${(e as Error).message}`);
  }
}

/** PUBLIC_ROLE: what a request without a token may do; only read or write (an anonymous admin could write as anyone). */
export function publicRole(env: { PUBLIC_ROLE?: string | undefined }): Role | undefined {
  const role = env.PUBLIC_ROLE;
  if (!role) return undefined;
  if (role !== "read" && role !== "write") throw misconfigured(`PUBLIC_ROLE must be "read" or "write", not "${role}"`);
  return role;
}

function misconfigured(message: string): RelayError {
  return new RelayError("misconfigured", message);
}
