import type { ChangesetLog } from "./log.ts";

export interface Env {
  LOG: DurableObjectNamespace<ChangesetLog>;
  /** HS256 secret for tokens: `.dev.vars` locally, `wrangler secret put RELAY_SECRET` in production. */
  RELAY_SECRET?: string;
  /** Request body limit in bytes (default 32 MiB). */
  MAX_BODY_BYTES?: string;
  /** Role granted to requests without a token ("read" or "write"); unset: tokens are required. */
  PUBLIC_ROLE?: string;
  /** Role a token needs to add a schema version ("write", the default, or "admin"). */
  SCHEMA_ROLE?: string;
  /** "1" enables POST /v1/dev/token on loopback hosts (local development only; `npm start` sets it). */
  DEV_TOKENS?: string;
}
