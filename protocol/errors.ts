/**
 * The closed set of error codes the relay sends. Users' code branches on
 * these, so a code, once shipped, keeps its meaning. Each has one HTTP status
 * and says whether the same request may succeed if simply retried. Codes the
 * client raises on its own (`closed`, `network`, …) are not part of the wire:
 * they live in client/errors.ts, on the same error class.
 */
export const WIRE_ERRORS = {
  bad_request: { status: 400, retryable: false },
  malformed_changeset: { status: 400, retryable: false },
  invalid_name: { status: 400, retryable: false },
  unsupported_media_type: { status: 415, retryable: false },
  unauthorized: { status: 401, retryable: false },
  forbidden: { status: 403, retryable: false },
  not_found: { status: 404, retryable: false },
  cseq_conflict: { status: 409, retryable: false },
  payload_too_large: { status: 413, retryable: false },
  too_many_entries: { status: 413, retryable: false },
  upgrade_required: { status: 426, retryable: false },
  /** A changeset does not fit the schema (the relay's at the log's version, or a replica's local tables). */
  schema_mismatch: { status: 400, retryable: false },
  /**
   * An entry captured under an older schema version than the log's: the
   * client pulls (applying the newer versions), translates its pending writes
   * and pushes again. Not retryable as it stands: the bytes must change.
   */
  schema_outdated: { status: 409, retryable: false },
  /** A schema version that differs from the log's version of the same number (versions never change once in the log). */
  schema_conflict: { status: 409, retryable: false },
  /** A migration statement that is not a schema statement, uses a reserved name, or SQLite refuses (its message says why). */
  schema_refused: { status: 400, retryable: false },
  /**
   * The cursor is older than the retained log (entries before it were
   * compacted into a snapshot): the replica resets onto the latest snapshot,
   * keeping its pending writes, and pulls from there.
   */
  snapshot_required: { status: 410, retryable: false },
  /** The database's object sheds load; comes with Retry-After. */
  overloaded: { status: 503, retryable: true },
  /** A bug or a transient runtime failure on the relay. */
  internal: { status: 500, retryable: true },
  /**
   * The relay is deployed without what it needs (RELAY_SECRET): a 500, but
   * retrying cannot help until its operator fixes the deployment.
   */
  misconfigured: { status: 500, retryable: false },
} as const satisfies Record<string, { status: number; retryable: boolean }>;

export type WireErrorCode = keyof typeof WIRE_ERRORS;

export function isWireErrorCode(value: unknown): value is WireErrorCode {
  return typeof value === "string" && Object.hasOwn(WIRE_ERRORS, value);
}

export interface RelayErrorOptions {
  cause?: unknown;
  /** The HTTP status the error arrived with, when it differs from the code's own (a proxy's 502, say). */
  status?: number;
  /** Minimum wait before a retry, in ms, when the relay asked for one. */
  retryAfterMs?: number;
}

/**
 * The one error class of the project, on both sides of the wire. Classify by
 * `code`, never by message text. `C` is the set of codes a side may raise: the
 * wire's here and in the relay, the wire's plus the client's in the client
 * (client/errors.ts); `NoInfer` keeps `new RelayError("typo", …)` an error
 * instead of widening `C`.
 */
export class RelayError<C extends string = WireErrorCode> extends Error {
  readonly code: C;
  /** The HTTP status for wire codes; undefined for codes that never cross the wire. */
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: NoInfer<C>, message: string, options?: RelayErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RelayError";
    this.code = code;
    this.status = options?.status ?? (isWireErrorCode(code) ? WIRE_ERRORS[code].status : undefined);
    this.retryAfterMs = options?.retryAfterMs;
  }

  /** Whether the same request may succeed if simply retried (after retryAfterMs, when set). */
  get retryable(): boolean {
    return isWireErrorCode(this.code) && WIRE_ERRORS[this.code].retryable;
  }

  toJSON(): ErrorBody<C> {
    return { error: { code: this.code, message: this.message } };
  }
}

export function isRelayError(e: unknown, code?: WireErrorCode): e is RelayError {
  return e instanceof RelayError && (code === undefined || e.code === code);
}

/** The error body on every non-2xx response and in WebSocket error frames. */
export interface ErrorBody<C extends string = WireErrorCode> {
  error: { code: C; message: string };
}
