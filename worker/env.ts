import type { ChangesetLog } from "./log.ts";

export interface Env {
  LOG: DurableObjectNamespace<ChangesetLog>;
  /** HS256 secret for tokens without a kid: `.dev.vars` locally, `wrangler secret put RELAY_SECRET` in production. */
  RELAY_SECRET?: string;
  /** HS256 secrets by kid, JSON (see worker/keys.ts). */
  RELAY_SECRETS?: string;
  /** Public keys for ES256/EdDSA/RS256 tokens, a JWKS as JSON (see worker/keys.ts). */
  RELAY_JWKS?: string;
  /** Required `iss` / `aud` of tokens, when set. */
  TOKEN_ISSUER?: string;
  TOKEN_AUDIENCE?: string;
  /** Origins whose pages may call the relay: comma-separated, or "*" (see worker/cors.ts). */
  ALLOWED_ORIGINS?: string;
  /** Request body limit in bytes (default 32 MiB). */
  MAX_BODY_BYTES?: string;
  /** Entries larger than this are uploaded and pulled in parts of this many bytes (default 8 MiB; protocol/limits.ts). */
  PART_BYTES?: string;
  /** Role granted to requests without a token ("read" or "write"); unset: tokens are required. */
  PUBLIC_ROLE?: string;
  /** Role a token needs to add a schema version ("write", the default, or "admin"). */
  SCHEMA_ROLE?: string;
  /** Role a token needs to upload a snapshot ("write", the default, or "admin"). */
  SNAPSHOT_ROLE?: string;
  /** Distinct token subjects that must report a snapshot's hash before the log is trimmed behind it (default 1). */
  SNAPSHOT_QUORUM?: string;
  /** Ask a caught-up replica for a snapshot after this many entries since the last one (default 10000; 0: never). */
  SNAPSHOT_EVERY?: string;
  /** Entries always kept, newest first, whatever snapshots exist (default 10000). */
  RETAIN_ENTRIES?: string;
  /** Entries younger than this many seconds are always kept (default 86400). */
  RETAIN_SECONDS?: string;
  /** "1" enables POST /v1/dev/token on loopback hosts (local development only; `npm start` sets it). */
  DEV_TOKENS?: string;
}
