import { RelayError } from "../protocol/errors.ts";

/** Map anything thrown to the wire error shape; internal details stay in the logs, not the response. */
export function toRelayError(e: unknown): RelayError {
  if (e instanceof RelayError) return e;
  console.error("relay internal error", e);
  return new RelayError("internal", "internal error");
}

export function errorResponse(e: unknown): Response {
  const err = toRelayError(e);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (err.retryAfterMs !== undefined) headers["retry-after"] = String(Math.ceil(err.retryAfterMs / 1000));
  return new Response(JSON.stringify(err.toJSON()), { status: err.status, headers });
}
