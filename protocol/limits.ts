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
/**
 * Transactions of any size (issue 18). A relay that takes parts (it says so
 * on /v1/health: `limits.partBytes`) accepts an entry larger than one part as
 * numbered parts of this size, each its own request, appended as one log
 * entry when the last arrives; a pull lists such an entry with its size and
 * the client fetches it in parts of the same size. Well under the body limit,
 * so a part and its envelope always fit one request. Relays may set another
 * (PART_BYTES; tests use small parts).
 */
export const PART_BYTES_DEFAULT = 8 * 1024 * 1024;
/**
 * The largest changeset one entry may hold on a relay that takes parts: what
 * a client can hold. It keeps the changeset as one BLOB in its outbox
 * (SQLite's default SQLITE_MAX_LENGTH is 10^9 bytes), SQLite's session
 * builds it in one allocation, and every replica assembles it into one buffer
 * to apply it (inside a 32-bit wasm heap in browsers). A larger write is
 * refused at commit (`write_too_large`). Besides, one change (one row) may
 * not pass `maxEntryBytes`: the relay validates a parted entry holding at
 * most one change and one storage chunk at a time (worker/entry-parts.ts).
 */
export const MAX_PARTED_ENTRY_BYTES = 512 * 1024 * 1024;
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
/**
 * One schema version's statements, as the relay stores them (their JSON
 * text, UTF-8): a version is one Durable Object row, and a row holds at most
 * 2 MB. Checked by the client at open and by the relay before any DDL runs.
 */
export const MAX_SCHEMA_VERSION_BYTES = 1024 * 1024;
/** Database names and client ids. */
export const NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/**
 * Socket push entries a database's object holds for its next turn (see
 * worker/push-queue.ts). Past it the object sheds load: further socket pushes
 * are refused as `overloaded` until the queue drains.
 */
export const MAX_QUEUED_PUSH_ENTRIES = 10 * MAX_ENTRIES_PER_PUSH;
/** The wait an `overloaded` answer asks for when the queue is full or the runtime sheds load (Retry-After over HTTP, retryAfterMs on the socket). */
export const OVERLOADED_RETRY_AFTER_MS = 1000;
/**
 * Admission (worker/admission.ts) counts a push's cost to the log object in
 * units of about 10 µs of its time, from W3 in `npm run bench`: a push
 * (dispatch, commit) ~10 units, an entry ~1, a 64 KiB of changeset bytes ~1.
 */
export const PUSH_UNITS = 10;
export const UNIT_BYTES = 64 * 1024;
/**
 * What one client may take of its database's object: a token bucket of units,
 * holding at most the burst and refilled at the rate. The burst covers what
 * the benchmarks offer from one client (W2: 10,000 single-row writes in about
 * half a second, ~25,000 units; a W3 writer's 10 s, ~45,000); the rate,
 * ~1% of the object's time, is what one client sustains beyond it while
 * others keep their latency. A client offering more gets `overloaded` with
 * the wait until its bucket holds the push, and all its pushes are refused
 * until then.
 */
export const CLIENT_UNITS_PER_SECOND = 1_000;
export const CLIENT_UNITS_BURST = 60_000;
/** The same for all clients of one database together: about what one object takes (~100,000 units/s in W3 saturated). */
export const DATABASE_UNITS_PER_SECOND = 100_000;
export const DATABASE_UNITS_BURST = 200_000;
/** An overloaded answer asks for at least this wait. */
export const MIN_RETRY_AFTER_MS = 100;
/**
 * Bytes the relay sends a socket beyond what its client has reported reading
 * (`got` frames; workerd tells the relay nothing about a socket's send
 * buffer: WebSocket has no bufferedAmount there). Past it the relay stops
 * sending that socket entries: it sends one `head` frame instead and skips
 * entries until the client reports having read back to half the bound; the
 * client catches up over HTTP. A socket whose answers alone (acks, errors)
 * pass twice the bound is closed with 1013.
 */
export const MAX_UNREAD_SOCKET_BYTES = 4 * 1024 * 1024;
/** A client reports what it has read (`got`) after this many bytes, and after every `head` frame. */
export const GOT_EVERY_BYTES = 256 * 1024;
