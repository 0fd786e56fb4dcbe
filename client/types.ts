import type { RelayError } from "./errors.ts";
import type { BackoffOptions } from "./backoff.ts";
import type { ConflictOptions, ConflictRecord } from "./conflicts.ts";
import type { Dropped } from "./translate.ts";
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
  /**
   * Tables that never replicate (names, or patterns where `*` matches any
   * run of characters, case-insensitive): never captured, never pushed,
   * writable even on a read-only replica, no primary key needed. Virtual
   * tables (FTS5, R-tree) and their shadow tables are always local.
   */
  local?: string[];
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
  /** The schema version of the local tables (the app's migrations, or the log's when it is ahead). */
  schemaVersion: number;
  /** The pull in progress when it takes more than one page (a first sync, a long time offline), else null. */
  progress: SyncProgress | null;
  /** Set when this replica's confirmed state differed from a snapshot of the log at the same seq (see "divergence"). */
  divergence: DivergenceEvent | null;
}

/** This replica's state at `seq` hashes to `local`, a snapshot the relay holds at that seq to `snapshot`. */
export interface DivergenceEvent {
  seq: number;
  local: string;
  snapshot: string;
  /** Token subjects that reported the snapshot's hash. */
  agreeing: number;
}

/**
 * How far a pull of more than one page has got: enough for a progress bar.
 * Bytes are the changesets' bytes as applied (not as compressed on the wire).
 */
export interface SyncProgress {
  /** Log entries applied so far in this pull. */
  entries: number;
  /** Entries from the cursor at the start of the pull to the relay's head (the head may move on meanwhile: then this grows). */
  entriesExpected: number;
  bytes: number;
  /** null: unknown. The relay reports its head as a seq, not the size of the log behind it. */
  bytesExpected: number | null;
}

export interface ChangeEvent {
  source: "local" | "remote";
  /** For remote changes: the last log seq applied. */
  cursor: number;
  /**
   * The tables the commit changed: for a local one, the tables in its
   * changeset; for a remote one, the tables of the log entries the sync step
   * applied. Both add every local table (virtual, shadow, declared `local`):
   * they are in no changeset, and triggers may write them.
   */
  tables: string[];
}
export interface SyncEvent {
  pushed: number;
  pulled: number;
  cursor: number;
  head: number;
}
/** Values of a pending local write that a newer schema version has no place for (its column or table was dropped). */
export type DroppedEvent = Dropped;
/** Something about the app's schema that works but will hurt (raised at open, see `on("warning")`). */
export interface ReplicaWarning {
  /** rowid_key: the table's key is INTEGER PRIMARY KEY, which SQLite assigns as max+1: offline replicas collide. */
  code: "rowid_key";
  table: string;
  message: string;
}
/** Event names and their payloads; `on` takes no other name (`on("chnage", ...)` does not compile). */
export interface ReplicaEvents {
  /** By a sync step, or at open (those reach every listener, whenever it subscribes, like warnings). */
  dropped: DroppedEvent;
  change: ChangeEvent;
  sync: SyncEvent;
  /** After each page of a pull that takes more than one page; status().progress says the same. */
  progress: SyncProgress;
  conflict: ConflictRecord;
  error: RelayError;
  connection: { connected: boolean; live: boolean };
  /** Raised at open; every listener gets those, whenever it subscribes. */
  warning: ReplicaWarning;
  /** This replica's confirmed state differs from a snapshot of the log at the same seq. */
  divergence: DivergenceEvent;
}

export interface Tx {
  /** `changes`: rows the statement itself changed (SQLite's changes(); not trigger or cascade writes). */
  exec(sql: string, params?: Params): Promise<{ changes: number }>;
  query<T extends Row = Row>(sql: string, params?: Params): Promise<T[]>;
}

