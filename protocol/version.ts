/**
 * Protocol versions. The version is in every route's path (`/v1/...`);
 * `GET /v1/health` reports the package version and the range of protocol
 * versions the relay speaks. A change that an older peer would misread gets a
 * new version; additions an older peer ignores (a new optional field, a new
 * error code it maps to `internal`) do not.
 *
 * Changelog (newest first):
 *   v1, package 0.1.0, transactions of any size (issue 18), additions an
 *   older peer ignores:
 *     - /v1/health's `limits` adds `partBytes` and `maxPartedEntryBytes`:
 *       the relay takes and serves entries larger than one request in parts.
 *       Clients that see no `partBytes` (older relays) keep refusing writes
 *       above `maxEntryBytes` at commit.
 *     - PUT /v1/db/:db/push/:client/:cseq/parts/:idx (raw part bytes, an
 *       answer shaped like a push's) and GET /v1/db/:db/entries/:seq/parts/:idx.
 *     - pull's `parts=1`: an entry larger than a part is listed with `size`
 *       and an empty changeset (older clients never ask: they get it whole).
 *     - a push of a cseq above one the client has staged in parts is
 *       `cseq_conflict`; a socket subscriber hears of an entry in parts by a
 *       `head` frame only.
 *   v1, package 0.1.0, identity and tokens (issue 12), all additions an
 *   older peer ignores or already handles:
 *     - a push's `client` no longer has to equal the token's `sub`: the first
 *       sub to push under a client id owns it (another sub: 403 `forbidden`,
 *       as before for a mismatch); the log records each entry's sub (stored
 *       only: pulled entries are unchanged on the wire).
 *     - /v1/health adds `limits: { maxEntryBytes }`; clients refuse larger
 *       writes at commit (older relays omit it: clients keep the default).
 *     - tokens may carry `nbf`, `iss`, `aud` and a `kid`, and be ES256, EdDSA
 *       or RS256 (RELAY_JWKS) besides HS256.
 *     - close code 1008 is sent again: a socket whose token expired, after an
 *       `unauthorized` error frame.
 *     - CORS headers and preflights (ALLOWED_ORIGINS); a WebSocket from an
 *       origin not allowed is 403 `forbidden`.
 *     - `misconfigured` also covers unreadable keys and PUBLIC_ROLE=admin.
 *   v1, package 0.1.0 (unreleased changes since first cut):
     - snapshots and compaction (issue 15): the snapshot routes
       (worker/snapshots.ts; JSON metadata, raw 1 MiB parts), the relay
       frame `snapshot { seq, build }` (an older client fails to parse it:
       relays that ask need clients of this version, or SNAPSHOT_EVERY=0),
       and `snapshot_required` (410): pulls behind the trimmed log, and a
       push retrying an entry that was compacted.
 *     - hostile clients (issue 17): the socket's `got` frame (client → relay,
 *       flow control; an older relay closes the socket on it (1007),
 *       an older client never sends it and is stopped at
 *       MAX_UNREAD_SOCKET_BYTES with a head frame); close code 1013 for a
 *       socket whose answers alone pass twice that; msgpack extension types
 *       refused as `bad_request`; `overloaded` from admission (token buckets);
 *       a schema version past MAX_SCHEMA_VERSION_BYTES is `payload_too_large`.
 *     - the schema in the log (protocol/schema.ts): push entries and log
 *       entries carry `v`, the schema version they were captured under
 *       (absent = 0); a push may carry `schema: [{ version, statements }]`,
 *       appended as schema entries (log entries with `schema`, cseq 0 and an
 *       empty changeset) and named in the response's `schema: [{ version,
 *       seq }]`; wire codes `schema_mismatch` (was client-only),
 *       `schema_outdated`, `schema_conflict`, `schema_refused`; the socket's
 *       push frame refuses `schema`. Not a new protocol version because v1 is
 *       unreleased: a v1 client of the first cut would misread schema entries.
 *     - error code `misconfigured` (500, not retryable): the relay lacks
 *       RELAY_SECRET. Older clients see an unknown code and treat it as
 *       `internal`.
 *     - `overloaded` (503) is produced: with a Retry-After header over HTTP,
 *       and `retryAfterMs` on the socket's error frame.
 *     - `method_not_allowed` and the close codes 1008 and 1013 were never
 *       sent and are gone from the code lists.
 *   v1, package 0.1.0: HTTP push/pull with msgpack bodies, gzip push bodies
 *     and pull responses, the WebSocket at /v1/db/:db/ws with sub/push/
 *     entries/head/ack/error frames (protocol/frames.ts), HS256 tokens.
 */
export const PROTOCOL_VERSION = 1;
export const MIN_PROTOCOL_VERSION = 1;
export const PACKAGE_VERSION = "0.1.0";
export const MSGPACK = "application/msgpack";
