import { RelayError } from "./errors.ts";

/**
 * Full-jitter exponential backoff: a random wait in [0, min(cap, base·2^n)],
 * never below the server's Retry-After floor. Full jitter keeps many replicas
 * that failed together from retrying together.
 */
export interface BackoffOptions {
  baseMs: number;
  capMs: number;
  /** Attempts before giving up (Infinity: keep trying until aborted). */
  maxAttempts: number;
  random?: () => number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 100, capMs: 10_000, maxAttempts: 6 };

export function backoffDelay(attempt: number, opts: BackoffOptions, floorMs = 0): number {
  const ceiling = Math.min(opts.capMs, opts.baseMs * 2 ** attempt);
  return Math.max(floorMs, Math.floor((opts.random ?? Math.random)() * ceiling));
}

/** A wait that an AbortSignal ends early with RelayError("aborted"). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new RelayError("aborted", "aborted"));
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(t);
      reject(new RelayError("aborted", "aborted"));
    }
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** Time as the sync engine sees it: a delegate, so tests can drive it with a fake clock. */
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Wait `ms`; an abort ends the wait early with RelayError("aborted"). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = { now: () => performance.now(), sleep };

/** Run `fn`, retrying retryable RelayErrors with backoff. Non-retryable errors end it at once. */
export async function withRetry<T>(fn: () => Promise<T>, opts: BackoffOptions, signal?: AbortSignal, wait: Clock["sleep"] = sleep): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof RelayError) || !e.retryable || attempt + 1 >= opts.maxAttempts) throw e;
      await wait(backoffDelay(attempt, opts, e.retryAfterMs ?? 0), signal);
    }
  }
}
