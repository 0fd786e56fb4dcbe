import { RelayError } from "../protocol/errors.ts";
import { MAX_BODY_BYTES_DEFAULT, maxEntryBytes, PART_BYTES_DEFAULT } from "../protocol/limits.ts";

/**
 * The relay's configuration, read from its bindings (wrangler.toml [vars] and
 * secrets; worker/env.ts lists them). Typed by the fields read, so Node tests
 * can import the modules that use it without the Workers types.
 */

/** The token secret; without one no token can be checked, which no retry will change. */
export function relaySecret(env: { RELAY_SECRET?: string | undefined }): string {
  if (!env.RELAY_SECRET) {
    throw new RelayError(
      "misconfigured",
      "the relay has no RELAY_SECRET: set it with `wrangler secret put RELAY_SECRET` (locally: RELAY_SECRET=... in .dev.vars)",
    );
  }
  return env.RELAY_SECRET;
}

/** MAX_BODY_BYTES when set to a positive integer, else the default. */
export function bodyLimit(env: { MAX_BODY_BYTES?: string | undefined }): number {
  const n = Number(env.MAX_BODY_BYTES);
  return Number.isSafeInteger(n) && n > 0 ? n : MAX_BODY_BYTES_DEFAULT;
}


/**
 * PART_BYTES when set to a positive integer (tests use small parts), else the
 * default; never more than a request carries, so a part always fits one.
 */
export function partBytes(env: { PART_BYTES?: string | undefined; MAX_BODY_BYTES?: string | undefined }): number {
  const n = Number(env.PART_BYTES);
  return Math.min(Number.isSafeInteger(n) && n > 0 ? n : PART_BYTES_DEFAULT, maxEntryBytes(bodyLimit(env)));
}
