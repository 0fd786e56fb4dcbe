/**
 * Named limits, checked before work is done. The relay's configurable ones
 * (body size) take their default from here; the rest are fixed by protocol v1.
 */
export const MAX_BODY_BYTES_DEFAULT = 32 * 1024 * 1024;
/** Room a push body needs besides its changeset: the msgpack envelope (client id, keys, lengths). */
export const PUSH_ENVELOPE_BYTES = 4096;
/**
 * The largest changeset a relay with this body limit accepts: what it
 * advertises as `limits.maxEntryBytes` on /v1/health, and what clients refuse
 * at commit above (a larger write could never be pushed).
 */
export function maxEntryBytes(bodyLimit: number): number {
  return bodyLimit - PUSH_ENVELOPE_BYTES;
}
/** Entries in one push request or socket frame. */
export const MAX_ENTRIES_PER_PUSH = 1000;
/** Columns in one changeset table header (SQLite's own SQLITE_MAX_COLUMN default). */
export const MAX_COLUMNS = 2000;
export const PULL_LIMIT_DEFAULT = 1000;
export const PULL_LIMIT_MAX = 10_000;
/** A pull page stops once it holds this many changeset bytes (at least one entry is always sent). */
export const PULL_BYTE_BUDGET = 8 * 1024 * 1024;
/** Durable Object SQLite rows and BLOBs are capped at 2 MB: changesets are stored in chunks of this size. */
export const STORAGE_CHUNK_BYTES = 1024 * 1024;
/** Database names and client ids. */
export const NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/**
 * Socket push entries a database's object holds for its next turn (see
 * worker/push-queue.ts). Past it the object sheds load: further socket pushes
 * are refused as `overloaded` until the queue drains.
 */
export const MAX_QUEUED_PUSH_ENTRIES = 10 * MAX_ENTRIES_PER_PUSH;
/** The wait an `overloaded` answer asks for (Retry-After over HTTP, retryAfterMs on the socket). */
export const OVERLOADED_RETRY_AFTER_MS = 1000;
