import { RelayError } from "./errors.ts";
import { isName } from "./validate.ts";

/**
 * HS256 JWTs with WebCrypto, which Workers, Node and browsers all have:
 * no dependency, and the same code mints (CLI, tests) and verifies (relay).
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
  iat?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function b64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(s: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Error("not base64url");
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

const keys = new Map<string, Promise<CryptoKey>>();
function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    keys.set(secret, key);
  }
  return key;
}

export function roleAtLeast(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

/** Mint a token. `ttlSeconds` sets `exp`; omit it for a token that never expires. */
export async function signToken(
  claims: { db: string; role: Role; sub: string },
  secret: string,
  ttlSeconds?: number,
  now: number = Date.now(),
): Promise<string> {
  if (!secret) throw new RelayError("bad_request", "empty secret");
  if (!(claims.db === "*" || isName(claims.db))) throw new RelayError("invalid_name", `bad db "${claims.db}"`);
  if (!isName(claims.sub)) throw new RelayError("invalid_name", `bad sub "${claims.sub}"`);
  if (!ROLES.includes(claims.role)) throw new RelayError("bad_request", `bad role "${claims.role}"`);
  const iat = Math.floor(now / 1000);
  const body: TokenClaims = { ...claims, iat, ...(ttlSeconds === undefined ? {} : { exp: iat + ttlSeconds }) };
  const head = b64url(enc.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const payload = b64url(enc.encode(JSON.stringify(body)));
  const sig = await crypto.subtle.sign("HMAC", await hmacKey(secret), enc.encode(`${head}.${payload}`));
  return `${head}.${payload}.${b64url(new Uint8Array(sig))}`;
}

/** Verify signature, algorithm, expiry and claim shapes; any failure is `unauthorized`. */
export async function verifyToken(token: string, secret: string, now: number = Date.now()): Promise<TokenClaims> {
  const unauthorized = (why: string): never => {
    throw new RelayError("unauthorized", `invalid token: ${why}`);
  };
  const parts = token.split(".");
  if (parts.length !== 3) unauthorized("not a JWT");
  const [h, p, s] = parts as [string, string, string];
  let header: unknown, claims: Record<string, unknown>, sig: Uint8Array;
  try {
    header = JSON.parse(dec.decode(unb64url(h)));
    claims = JSON.parse(dec.decode(unb64url(p)));
    sig = unb64url(s);
  } catch {
    return unauthorized("not a JWT");
  }
  // Pinning the algorithm closes the "alg: none" and key-confusion holes.
  if ((header as { alg?: unknown } | null)?.alg !== "HS256") unauthorized("algorithm must be HS256");
  const ok = await crypto.subtle.verify("HMAC", await hmacKey(secret), sig as Uint8Array<ArrayBuffer>, enc.encode(`${h}.${p}`));
  if (!ok) unauthorized("bad signature");
  if (typeof claims !== "object" || claims === null) unauthorized("claims must be an object");
  const { db, role, sub, exp } = claims;
  if (exp !== undefined && (typeof exp !== "number" || exp * 1000 <= now)) unauthorized("expired");
  if (!(db === "*" || isName(db))) unauthorized("bad db claim");
  if (!ROLES.includes(role as Role)) unauthorized("bad role claim");
  if (!isName(sub)) unauthorized("bad sub claim");
  return claims as unknown as TokenClaims;
}

/** Parse "1h", "30m", "7d", "45s" or plain seconds. */
export function parseTtl(ttl: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(ttl.trim());
  if (!m) throw new RelayError("bad_request", `bad ttl "${ttl}": use e.g. 30m, 1h, 7d`);
  return Number(m[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "" | "s" | "m" | "h" | "d"];
}

/**
 * The claims of a token, unverified: the client reads its own token to learn
 * its role and sub. Never use this to authorize anything.
 */
export function readTokenClaims(token: string): Partial<TokenClaims> | undefined {
  try {
    const claims = JSON.parse(dec.decode(unb64url(token.split(".")[1] ?? "")));
    return typeof claims === "object" && claims !== null ? claims : undefined;
  } catch {
    return undefined;
  }
}
