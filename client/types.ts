import type { RelayError } from "./errors.ts";
import type { BackoffOptions } from "./backoff.ts";
import type { ConflictOptions, ConflictRecord } from "./conflicts.ts";
import type { DriverKind, Params, Row } from "./drivers/types.ts";
import type { Blocked } from "./sync-loop.ts";
import type { TokenOption } from "./token.ts";
import type { Transport } from "./transport/http.ts";
import type { WebSocketLike } from "./transport/socket.ts";

/** The replica's public shapes: options, status, events, the transaction handle. */
export interface ReplicaOptions {
  /** Relay base URL, e.g. http://127.0.0.1:8787 */
  url: string;
  /** Database name on the relay ([A-Za-z0-9_-]{1,64}). */
  db: string;
  /**
   * A JWT, or a function (sync or async) returning one: called at open,
   * shortly before the token's `exp`, and after an `unauthorized` answer.
   * Optional only when the relay grants a public role.
   */
  token?: TokenOption;
  /** A file (node driver) or ":memory:" (default). */
  path?: string;
  /** Default: "node" on Node >= 22.13, "wasm" elsewhere. */
  driver?: DriverKind;
  /** Statements run at open, idempotently (use IF NOT EXISTS). The only place for DDL. */
  schema?: string[];
  conflicts?: ConflictOptions;
  /** Default: the one persisted in the database, else 128 random bits made when the database is created. Never the token's sub. */
  clientId?: string;
  /** Stay connected over a WebSocket: push each commit at once, apply others' entries as they land. */
  live?: boolean;
  /** Live socket factory (default: the runtime's WebSocket). */
  createWebSocket?: (url: string) => WebSocketLike;
  /** Live heartbeat interval in ms (default 15000). */
  heartbeatMs?: number;
  /** Refuse local writes. Default: true when the token's role is "read". */
  readOnly?: boolean;
  /** Override how the relay is reached (tests inject faults here). */
  transport?: Transport;
  fetch?: typeof fetch;
  /** Give up on one HTTP request after this many ms (default 30000); retried like a network error. */
  requestTimeoutMs?: number;
  backoff?: Partial<BackoffOptions>;
}

export interface ReplicaStatus {
  clientId: string;
  /** Last log seq applied locally. */
  cursor: number;
  /** Last log seq the relay reported. */
  head: number;
  /** Local transactions not yet confirmed by the log. */
  pending: number;
  connected: boolean;
  /** Live sync is switched on (it may still be connecting); false after setLive(false) or a fatal error. */
  live: boolean;
  driver: DriverKind;
  readOnly: boolean;
  /** A push the relay refused for good: that entry (cseq) and those after it are held, not dropped, until sync() or a new token; null otherwise. */
  blocked: Blocked | null;
}

export interface ChangeEvent {
  source: "local" | "remote";
  /** For remote changes: the last log seq applied. */
  cursor: number;
}
export interface SyncEvent {
  pushed: number;
  pulled: number;
  cursor: number;
  head: number;
}
export interface ReplicaEvents extends Record<string, unknown> {
  change: ChangeEvent;
  sync: SyncEvent;
  conflict: ConflictRecord;
  error: RelayError;
  connection: { connected: boolean; live: boolean };
}

export interface Tx {
  exec(sql: string, params?: Params): Promise<{ changes: number }>;
  query<T extends Row = Row>(sql: string, params?: Params): Promise<T[]>;
}

