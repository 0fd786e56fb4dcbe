/**
 * Messages between a page and its database worker (postMessage), and between
 * the workers of one origin's tabs (BroadcastChannel). Everything here is
 * structured-cloneable: errors travel as { code, message } and are rebuilt
 * as RelayError on arrival.
 *
 *   page ──call──▶ own worker ──(owner? run it : req over the channel)──▶ owner tab's worker
 *   page ◀─result/event/status── own worker ◀──res/event/status── owner tab's worker
 */
import { isErrorCode, RelayError, type ErrorCode } from "../errors.ts";
import type { ConflictOptions } from "../conflicts.ts";
import type { Params, Row } from "../drivers/types.ts";
import type { ReplicaStatus } from "../types.ts";

export const PROTOCOL = "changeset-relay/browser@1";

/** The openReplica options that can cross a thread boundary (no functions, no transports). */
export interface WorkerOpenOptions {
  url: string;
  db: string;
  token?: string;
  /** The page has a token function: the worker asks the page for each token ("token-request"). */
  tokenFromPage?: boolean;
  /** OPFS file name; ":memory:" for a replica that lives as long as its owner tab. */
  path: string;
  migrations?: string[][];
  schema?: string[];
  /** Tables that never replicate (names or `*` patterns), as in the Node openReplica. */
  local?: string[];
  conflicts?: Omit<ConflictOptions, "onConflict">;
  clientId?: string;
  live?: boolean;
  readOnly?: boolean;
  backoff?: { baseMs?: number; capMs?: number; maxAttempts?: number };
  /** Force a storage: "memory" skips OPFS. Default "auto": OPFS when the browser has it. */
  storage?: "auto" | "memory";
  /** URL of sqlite3.wasm when the bundler does not place it next to the worker. */
  wasmUrl?: string;
}

export type Storage = "opfs" | "memory";

/** What `status()` reports in a browser: the replica's status plus where it lives. */
export interface BrowserStatus extends ReplicaStatus {
  /** "opfs": persisted in the origin private file system; "memory": gone when the owner tab closes. */
  storage: Storage;
  persistent: boolean;
  /** Whether this tab's worker owns the database (the others proxy through it). */
  owner: boolean;
  /** Whether live sync is switched on (see setLive); `connected` says whether it is connected. */
  live: boolean;
}

/** Status fields that belong to the database, the same in every tab. */
export type SharedStatus = Omit<BrowserStatus, "owner">;

export type Method =
  | "exec"
  | "query"
  | "sync"
  | "conflicts"
  | "setLive"
  | "discardBlocked"
  | "status"
  | "txBegin"
  | "txExec"
  | "txQuery"
  /** Several tx.exec / tx.query calls a page issued in one turn, in order: one message each way. */
  | "txBatch"
  | "txEnd";

export interface CallArgs {
  exec: [sql: string, params?: Params];
  query: [sql: string, params?: Params];
  sync: [];
  conflicts: [];
  setLive: [enabled: boolean];
  discardBlocked: [];
  status: [];
  txBegin: [];
  txExec: [tx: string, sql: string, params?: Params];
  txQuery: [tx: string, sql: string, params?: Params];
  txBatch: [tx: string, ops: TxOp[]];
  txEnd: [tx: string, commit: boolean];
}

/** One call of a txBatch. */
export type TxOp = [kind: "exec" | "query", sql: string, params?: Params];

/** What became of one call of a txBatch: each call resolves or rejects on its own, as if sent alone. */
export type Outcome = { ok: true; value: unknown } | { ok: false; error: WireError };

/**
 * Calls that cannot change status(): their results carry none, which spares
 * the count of the outbox (a query) per statement of a transaction. The
 * pending count moves at txEnd; the rest comes with events.
 */
export const KEEPS_STATUS: ReadonlySet<Method> = new Set<Method>(["query", "conflicts", "txBegin", "txExec", "txQuery", "txBatch"]);

export interface WireError {
  code: ErrorCode | "unknown";
  message: string;
  name: string;
}

export type EventName = "change" | "sync" | "progress" | "conflict" | "error" | "connection" | "warning" | "dropped" | "status" | "owner";

/** page → worker */
export type PageToWorker =
  | { t: "open"; options: WorkerOpenOptions }
  | { t: "call"; id: number; method: Method; args: unknown[] }
  /** The answer to a "token-request": the page's token function ran in the page. */
  | { t: "token"; id: number; ok: true; token: string }
  | { t: "token"; id: number; ok: false; error: WireError }
  /** A watched query (watch ids are the page's own); it runs where the database is. */
  | { t: "watch"; id: number; sql: string; params: Params | undefined }
  | { t: "unwatch"; id: number }
  | { t: "close" };

/** A watch's news: rows that differ from the last ones sent, or its query's error. */
export type Watched = { rows: Row[] } | { error: WireError };

/** worker → page */
export type WorkerToPage =
  | { t: "opened"; status: BrowserStatus; openMs: number }
  | { t: "open-failed"; error: WireError }
  /** `status` is left out when the call cannot have changed it (KEEPS_STATUS). */
  | { t: "result"; id: number; ok: true; value: unknown; status?: BrowserStatus | undefined }
  | { t: "result"; id: number; ok: false; error: WireError; status?: BrowserStatus | undefined }
  | { t: "event"; name: EventName; payload: unknown; status: BrowserStatus }
  | { t: "watched"; id: number; result: Watched }
  | { t: "warn"; message: string }
  /** The replica needs a token (at open, before expiry, after unauthorized): the page runs its token function. */
  | { t: "token-request"; id: number }
  | { t: "closed" };

/** worker ↔ worker, on the BroadcastChannel of one database */
export type Peer =
  /** A tab's worker looking for the owner. */
  | { t: "hello"; from: string }
  /** The owner announcing itself (on taking over, and in answer to hello). */
  | { t: "owner"; owner: string; status: SharedStatus }
  | { t: "req"; from: string; id: number; method: Method; args: unknown[] }
  | { t: "res"; to: string; id: number; ok: true; value: unknown; status?: SharedStatus | undefined }
  | { t: "res"; to: string; id: number; ok: false; error: WireError; status?: SharedStatus | undefined }
  | { t: "event"; name: EventName; payload: unknown; status: SharedStatus }
  /** A follower's watches run at the owner; they are sent again to each new owner. */
  | { t: "watch"; from: string; id: number; sql: string; params: Params | undefined }
  | { t: "unwatch"; from: string; id: number }
  | { t: "watched"; to: string; id: number; result: Watched };

export function toWire(e: unknown): WireError {
  if (e instanceof RelayError) return { code: e.code, message: e.message, name: e.name };
  const err = e as { message?: unknown; name?: unknown } | null;
  return { code: "unknown", message: typeof err?.message === "string" ? err.message : String(e), name: typeof err?.name === "string" ? err.name : "Error" };
}

export function fromWire(w: WireError): Error {
  if (isErrorCode(w.code)) return new RelayError(w.code, w.message);
  return Object.assign(new Error(w.message), { name: w.name });
}

/** Names of the Web Lock and BroadcastChannel of one database file of one origin. */
export function channelName(db: string, path: string): string {
  return `changeset-relay:${db}:${path}`;
}
