import { RelayError, type WireErrorCode } from "../protocol/errors.ts";
import { OVERLOADED_RETRY_AFTER_MS } from "../protocol/limits.ts";

/**
 * Map anything thrown to the wire error shape; internal details stay in the
 * logs, not the response. The runtime marks a call to an object that sheds
 * load (too many requests queued for it) with `overloaded`: that is our
 * `overloaded` too.
 */
export function toRelayError(e: unknown): RelayError {
  if (e instanceof RelayError) return e;
  if ((e as { overloaded?: unknown } | null)?.overloaded === true) {
    return new RelayError("overloaded", "the database is overloaded; try again shortly", { retryAfterMs: OVERLOADED_RETRY_AFTER_MS });
  }
  console.error("relay internal error", e);
  return new RelayError("internal", "internal error");
}

export function errorResponse(e: unknown): Response {
  const err = toRelayError(e);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (err.retryAfterMs !== undefined) headers["retry-after"] = String(Math.ceil(err.retryAfterMs / 1000));
  return new Response(JSON.stringify(err.toJSON()), { status: err.status ?? 500, headers });
}

/**
 * What an RPC method of the log object returns. RPC carries an exception's
 * message but not its class or code, so the object's refusals travel as
 * values and the Worker turns them back into RelayErrors.
 */
export type Outcome<T> = { ok: T } | { error: { code: WireErrorCode; message: string; retryAfterMs?: number } };

export function outcome<T>(run: () => T): Outcome<T> {
  try {
    return { ok: run() };
  } catch (e) {
    const err = toRelayError(e);
    return { error: { code: err.code, message: err.message, ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: err.retryAfterMs }) } };
  }
}

export function unwrap<T>(o: Outcome<T>): T {
  if ("ok" in o) return o.ok;
  const { code, message, retryAfterMs } = o.error;
  throw new RelayError(code, message, retryAfterMs === undefined ? undefined : { retryAfterMs });
}
