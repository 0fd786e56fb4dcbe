import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { RelayError } from "../protocol/errors.ts";

/**
 * Cross-origin use. ALLOWED_ORIGINS: comma-separated origins
 * ("https://app.example.com,http://localhost:5173"), or "*" for any; unset,
 * only pages the relay serves itself (same origin) may call it from a
 * browser. Node and other non-browser clients send no Origin and are not
 * concerned: tokens, not origins, authorize.
 */
export interface CorsEnv {
  ALLOWED_ORIGINS?: string | undefined;
}

function allowed(origin: string, env: CorsEnv): boolean {
  const list = (env.ALLOWED_ORIGINS ?? "").split(",").map((o) => o.trim().replace(/\/+$/, "")).filter(Boolean);
  return list.includes("*") || list.includes(origin);
}

/**
 * Preflight answers and CORS headers on the HTTP routes (Hono's middleware).
 * Exposed: Retry-After (the client honours it after `overloaded`) and
 * x-relay-instance. Not on the socket route: a 101 response is not the
 * middleware's to rewrite, and browsers do not apply CORS to WebSockets —
 * checkSocketOrigin does the check there instead.
 */
export function corsHeaders(): MiddlewareHandler<{ Bindings: CorsEnv }> {
  const handler = cors({
    origin: (origin, c) => (allowed(origin, c.env as CorsEnv) ? origin : null),
    allowMethods: ["GET", "POST", "PUT"], // PUT: snapshot parts (snapshots.ts)
    allowHeaders: ["authorization", "content-type", "content-encoding"],
    exposeHeaders: ["retry-after", "x-relay-instance"],
    maxAge: 86400,
  });
  return (c, next) => (c.req.header("upgrade")?.toLowerCase() === "websocket" ? next() : handler(c, next));
}

/**
 * Browsers send any page's Origin on a WebSocket handshake and apply no
 * same-origin rule to it, so the relay checks it against the same list: a
 * page from an origin not listed cannot open a socket with a token it holds.
 */
export function checkSocketOrigin(request: Request, env: CorsEnv): void {
  const origin = request.headers.get("origin");
  if (!origin || origin === new URL(request.url).origin || allowed(origin, env)) return;
  throw new RelayError("forbidden", `origin ${origin} is not allowed: add it to the relay's ALLOWED_ORIGINS`);
}
