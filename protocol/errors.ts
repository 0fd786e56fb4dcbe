/**
 * The closed set of error codes on the wire. Users' code branches on these,
 * so a code, once shipped, keeps its meaning. Each code has one HTTP status.
 */
export const ERROR_STATUS = {
  bad_request: 400,
  malformed_changeset: 400,
  invalid_name: 400,
  unsupported_media_type: 415,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  cseq_conflict: 409,
  payload_too_large: 413,
  too_many_entries: 413,
  upgrade_required: 426,
  overloaded: 503,
  internal: 500,
  // Client-side codes: never sent by the relay, raised by the replica library.
  schema_mismatch: 409,
  network: 503,
  read_only: 403,
  no_primary_key: 400,
  ddl_outside_schema: 400,
  apply_failed: 500,
  closed: 400,
  aborted: 499,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** Codes after which the same request may succeed if simply retried. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set(["overloaded", "internal", "network"]);

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_STATUS, value);
}

/**
 * The one error class of the project, on both sides of the wire. Classify by
 * `code`, never by message text.
 */
export class RelayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Minimum wait before a retry, in ms, when the server asked for one. */
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; status?: number; retryAfterMs?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RelayError";
    this.code = code;
    this.status = options?.status ?? ERROR_STATUS[code];
    this.retryAfterMs = options?.retryAfterMs;
  }

  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }

  toJSON(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

export function isRelayError(e: unknown, code?: ErrorCode): e is RelayError {
  return e instanceof RelayError && (code === undefined || e.code === code);
}

/** Anything thrown, as a RelayError: ours pass through, the rest become `internal` with the original as cause. */
export function asRelayError(e: unknown): RelayError {
  return e instanceof RelayError ? e : new RelayError("internal", String((e as Error)?.message ?? e), { cause: e });
}

/** The error body on every non-2xx response and in WebSocket error frames. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

/** Parse an error body received from the relay; unknown shapes become `internal`. */
export function errorFromBody(status: number, body: unknown, retryAfterMs?: number): RelayError {
  const err = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code: ErrorCode = isErrorCode(err?.code) ? err.code : status === 503 ? "overloaded" : "internal";
  const message = typeof err?.message === "string" ? err.message : `relay answered HTTP ${status}`;
  return new RelayError(code, message, retryAfterMs === undefined ? { status } : { status, retryAfterMs });
}
