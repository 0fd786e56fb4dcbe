import type { RelayError } from "./errors.ts";
import type { BackoffOptions } from "./backoff.ts";
import type { ConflictOptions, ConflictRecord } from "./conflicts.ts";
import type { Dropped } from "./translate.ts";
import type { DriverKind, Params, Row } from "./drivers/types.ts";
import type { Transport } from "./transport/http.ts";
import type { WebSocketLike } from "./transport/socket.ts";

/** The replica's public shapes: options, status, events, the transaction handle. */
export interface ReplicaOptions {
  /** Relay base URL, e.g. http://127.0.0.1:8787 */
  url: string;
  /** Database name on the relay ([A-Za-z0-9_-]{1,64}). */
  db: string;
  /** A JWT from the relay's operator; optional only when the relay grants a public role. */
  token?: string;
  /** A file (node driver) or ":memory:" (default). */
  path?: string;
  /** Default: "node" on Node >= 22.13, "wasm" elsewhere. */
  driver?: DriverKind;
  /**
   * The app's schema, as versions: `migrations[0]` is version 1, and so on.
   * Each is a list of schema statements (CREATE/ALTER/DROP of tables,
   * indexes, views, triggers). A version never changes once any replica has
   * it: add a new one. New versions run at open and go into the log ahead of
   * the writes captured under them; see README "Schema changes".
   */
  migrations?: string[][];
  /** Shorthand for `migrations: [schema]`: the app's one version. */
  schema?: string[];
  conflicts?: ConflictOptions;
  /** Default: the one persisted in the database, else the token's sub, else random. */
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
  /** The schema version of the local tables (the app's migrations, or the log's when it is ahead). */
  schemaVersion: number;
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
/** Values of a pending local write that a newer schema version has no place for (its column or table was dropped). */
export type DroppedEvent = Dropped;

export interface ReplicaEvents extends Record<string, unknown> {
  dropped: DroppedEvent;
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

