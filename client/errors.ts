import { isWireErrorCode, RelayError as WireRelayError, type RelayErrorOptions, type WireErrorCode } from "../protocol/errors.ts";

/**
 * Codes the client raises itself. The relay never sends them, so they have no
 * HTTP status; they share the one error class with the wire's codes.
 */
export const CLIENT_ERRORS = {
  /** No answer from the relay (unreachable, connection lost, timed out): the request may or may not have landed. */
  network: { retryable: true },
  /** A write on a replica whose token can only read. */
  read_only: { retryable: false },
  /** A table without a PRIMARY KEY (the session extension cannot capture it). */
  no_primary_key: { retryable: false },
  /** A write put NULL in a primary key column: the session extension would never record the row (client/null-keys.ts). */
  null_primary_key: { retryable: false },
  /** DDL inside a transaction: schema changes go through the `migrations` (or `schema`) option. */
  ddl_outside_schema: { retryable: false },
  /** A trigger writes both local and replicated tables: it can neither run on replay nor be skipped (client/triggers.ts). */
  mixed_trigger: { retryable: false },
  /** SQLite refused to apply a changeset. */
  apply_failed: { retryable: false },
  /** A local write larger than the relay accepts (its advertised maxEntryBytes): refused before it committed. */
  write_too_large: { retryable: false },
  /** The database file is open in another replica (this process or another): one opener at a time. */
  database_locked: { retryable: false },
  /** The replica, or the transaction, is already closed. */
  closed: { retryable: false },
  /** The caller's AbortSignal fired. */
  aborted: { retryable: false },
  /** A snapshot cannot be built now (the local tables are at a schema version the log lacks): sync first. */
  snapshot_unavailable: { retryable: false },
} as const satisfies Record<string, { retryable: boolean }>;

export type ClientErrorCode = keyof typeof CLIENT_ERRORS;
/** Every code a RelayError raised by the client library can carry. */
export type ErrorCode = WireErrorCode | ClientErrorCode;

export function isErrorCode(value: unknown): value is ErrorCode {
  return isWireErrorCode(value) || (typeof value === "string" && Object.hasOwn(CLIENT_ERRORS, value));
}

/**
 * The protocol's RelayError, able to carry the client's codes too. Not a
 * second kind of error: errors the shared protocol code raises inside the
 * client (decoding, validators, the changeset reader) are the protocol's
 * class, and `instanceof` here accepts them, so users catch one class.
 */
export class RelayError extends WireRelayError<ErrorCode> {
  static override [Symbol.hasInstance](value: unknown): boolean {
    return value instanceof WireRelayError;
  }

  constructor(code: ErrorCode, message: string, options?: RelayErrorOptions) {
    super(code, message, options);
  }

  override get retryable(): boolean {
    return isWireErrorCode(this.code) ? super.retryable : CLIENT_ERRORS[this.code].retryable;
  }
}

export function isRelayError(e: unknown, code?: ErrorCode): e is RelayError {
  return e instanceof RelayError && (code === undefined || e.code === code);
}

/** Anything thrown, as a RelayError: ours pass through, the rest become `internal` with the original as cause. */
export function asRelayError(e: unknown): RelayError {
  return e instanceof RelayError ? e : new RelayError("internal", String((e as Error)?.message ?? e), { cause: e });
}

/** An error response from the relay; shapes that are not ours (a proxy's page) are classified by status. */
export function errorFromBody(status: number, body: unknown, retryAfterMs?: number): RelayError {
  const err = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code: WireErrorCode = isWireErrorCode(err?.code) ? err.code : status === 503 ? "overloaded" : "internal";
  const message = typeof err?.message === "string" ? err.message : `relay answered HTTP ${status}`;
  return new RelayError(code, message, retryAfterMs === undefined ? { status } : { status, retryAfterMs });
}
