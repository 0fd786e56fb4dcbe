import { errors as jose, jwtVerify, SignJWT, type CryptoKey as JoseKey, type JWTVerifyGetKey, type KeyObject } from "jose";
import { RelayError } from "./errors.ts";
import { isName } from "./validate.ts";

/**
 * JWTs: minted by the CLI, tests and an app's backend, verified by the relay.
 * With `jose` rather than Hono's JWT helpers or our own WebCrypto code: the
 * relay must verify keys chosen by `kid` from a JWKS (ES256, EdDSA, RS256:
 * an auth provider signs with its private key, the relay holds only public
 * keys) and rotate HS256 secrets by `kid`, which Hono's helper does not do
 * (one key, no JWKS), and jose runs unchanged in workerd, Node and browsers.
 */
export const ROLES = ["read", "write", "admin"] as const;
export type Role = (typeof ROLES)[number];

export interface TokenClaims {
  /** A database name, or "*" for every database. */
  db: string;
  role: Role;
  sub: string;
  /** Expiry, seconds since the epoch. */
  exp?: number;
  /** Not before, seconds since the epoch. */
  nbf?: number;
  iat?: number;
  iss?: string;
  aud?: string | string[];
}

/** Algorithms the relay accepts; anything else (`none` above all) is refused before a key is looked at. */
export const ALGORITHMS = ["HS256", "ES256", "EdDSA", "Ed25519", "RS256"] as const;
/** Leeway for `exp` and `nbf` between the clocks of whoever minted a token and the relay. */
export const CLOCK_SKEW_SECONDS = 5;

/** How the relay checks tokens (worker/keys.ts builds it from its configuration). */
export interface VerifyKeys {
  /** HS256 secret for tokens without a `kid`. */
  secret?: string;
  /** HS256 secrets by `kid` (rotation: mint with the new kid, keep the old until its tokens expire). */
  secrets?: Readonly<Record<string, string>>;
  /** Public keys (ES256, EdDSA, RS256) chosen by `kid` and `alg`: jose's createLocalJWKSet. */
  jwks?: JWTVerifyGetKey;
  /** When set, tokens must carry this `iss`. */
  issuer?: string;
  /** When set, tokens must carry this `aud` (or include it). */
  audience?: string;
}

/** A private key to sign with (CLI `--key`), or an HS256 secret with a kid. */
export interface SigningKey {
  alg: (typeof ALGORITHMS)[number];
  key: JoseKey | KeyObject | Uint8Array;
  kid?: string;
}

const enc = new TextEncoder();

/** When the relay stops honouring a token: its `exp` plus the skew (ms since the epoch); Infinity without one. */
export function expiresAt(claims: Pick<TokenClaims, "exp">): number {
  return claims.exp === undefined ? Infinity : (claims.exp + CLOCK_SKEW_SECONDS) * 1000;
}

export function roleAtLeast(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

/**
 * Mint a token. `key`: an HS256 secret, or a key with its algorithm (and
 * kid). `ttlSeconds` sets `exp`; omit it for a token that never expires.
 */
export async function signToken(
  claims: { db: string; role: Role; sub: string; iss?: string; aud?: string; nbf?: number },
  key: string | SigningKey,
  ttlSeconds?: number,
  now: number = Date.now(),
): Promise<string> {
  if (key === "") throw new RelayError("bad_request", "empty secret");
  if (!(claims.db === "*" || isName(claims.db))) throw new RelayError("invalid_name", `bad db "${claims.db}"`);
  if (!isName(claims.sub)) throw new RelayError("invalid_name", `bad sub "${claims.sub}"`);
  if (!ROLES.includes(claims.role)) throw new RelayError("bad_request", `bad role "${claims.role}"`);
  const k: SigningKey = typeof key === "string" ? { alg: "HS256", key: enc.encode(key) } : key;
  const iat = Math.floor(now / 1000);
  const body: Record<string, unknown> = { ...claims, iat, ...(ttlSeconds === undefined ? {} : { exp: iat + ttlSeconds }) };
  return new SignJWT(body).setProtectedHeader({ alg: k.alg, typ: "JWT", ...(k.kid === undefined ? {} : { kid: k.kid }) }).sign(k.key);
}

/**
 * Verify signature, algorithm, `exp`/`nbf` (with CLOCK_SKEW_SECONDS),
 * `iss`/`aud` when configured, and the claims' shapes. A bad token is
 * `unauthorized`; keys that cannot check it at all are `misconfigured`.
 */
export async function verifyToken(token: string, keys: string | VerifyKeys, now: number = Date.now()): Promise<TokenClaims> {
  const k: VerifyKeys = typeof keys === "string" ? { secret: keys } : keys;
  const unauthorized = (why: string): never => {
    throw new RelayError("unauthorized", `invalid token: ${why}`);
  };
  const getKey: JWTVerifyGetKey = async (header, jws) => {
    if (header.alg === "HS256") {
      const secret = header.kid === undefined ? k.secret : k.secrets?.[header.kid];
      if (secret) return enc.encode(secret);
      return unauthorized(header.kid === undefined ? "HS256 tokens without a kid need RELAY_SECRET on the relay" : `no HS256 secret for kid "${header.kid}"`);
    }
    if (!k.jwks) return unauthorized(`${header.alg} tokens need RELAY_JWKS on the relay`);
    return k.jwks(header, jws);
  };
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, getKey, {
      algorithms: [...ALGORITHMS],
      clockTolerance: CLOCK_SKEW_SECONDS,
      currentDate: new Date(now),
      ...(k.issuer ? { issuer: k.issuer } : {}),
      ...(k.audience ? { audience: k.audience } : {}),
    }));
  } catch (e) {
    if (e instanceof RelayError) throw e;
    if (e instanceof jose.JWTExpired) return unauthorized("expired");
    if (e instanceof jose.JWTClaimValidationFailed) return unauthorized(`${e.claim}: ${e.message}`);
    if (e instanceof jose.JWKSNoMatchingKey) return unauthorized("no key in RELAY_JWKS matches its kid and alg");
    if (e instanceof jose.JWSSignatureVerificationFailed) return unauthorized("bad signature");
    if (e instanceof jose.JOSEAlgNotAllowed) return unauthorized(`algorithm must be one of ${ALGORITHMS.join(", ")}`);
    return unauthorized((e as Error)?.message ?? "not a JWT");
  }
  const { db, role, sub } = payload;
  if (!(db === "*" || isName(db))) unauthorized("bad db claim");
  if (!ROLES.includes(role as Role)) unauthorized("bad role claim");
  if (!isName(sub)) unauthorized("bad sub claim");
  return payload as unknown as TokenClaims;
}

/** Parse "1h", "30m", "7d", "45s" or plain seconds. */
export function parseTtl(ttl: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(ttl.trim());
  if (!m) throw new RelayError("bad_request", `bad ttl "${ttl}": use e.g. 30m, 1h, 7d`);
  return Number(m[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "" | "s" | "m" | "h" | "d"];
}
