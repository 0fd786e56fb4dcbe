import { decodeJwt } from "jose";
import { asRelayError, RelayError } from "./errors.ts";
import type { TokenClaims } from "../protocol/token.ts";

/**
 * The replica's token: a fixed string, or a function (sync or async) that
 * returns a fresh one. The function is called at open, shortly before the
 * token's `exp`, and after the relay answers `unauthorized`; every HTTP
 * request and every socket (re)connection reads the current token, and
 * listeners (the live socket) hear of each new one.
 */
export type TokenOption = string | (() => string | Promise<string>);

/** Refresh this long before `exp`: a quarter of the token's lifetime, at most a minute. */
function refreshMargin(lifetimeMs: number): number {
  return Math.min(60_000, lifetimeMs / 4);
}

/** A failed token function is called again after this long (the next `unauthorized` also calls it). */
const RETRY_MS = 5_000;

export class TokenSource {
  private token: string | undefined;
  private readonly fn: (() => string | Promise<string>) | undefined;
  private inFlight: Promise<boolean> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private readonly listeners = new Set<() => void>();
  /** Where a failed refresh is reported (the replica's "error" event). */
  onError: (e: RelayError) => void = () => undefined;

  constructor(option: TokenOption | undefined) {
    if (typeof option === "function") this.fn = option;
    else this.token = option;
  }

  /** True when the app gave a function: a refresh can bring a different token. */
  get refreshable(): boolean {
    return this.fn !== undefined;
  }

  /** At open: the function's first token; its errors reject the open. */
  async init(): Promise<void> {
    if (!this.fn) return;
    this.set(await this.call());
  }

  current(): string | undefined {
    return this.token;
  }

  /** The current token's claims, unverified: the client reads its own role and expiry. Never authorizes anything. */
  claims(): Partial<TokenClaims> | undefined {
    return readTokenClaims(this.token);
  }

  /** Called with no argument whenever a new token arrives. Returns an unsubscribe function. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Ask the function for a new token (concurrent calls share one call).
   * Resolves true when a different token arrived; false for a fixed token,
   * the same token again, or a failure (reported as an "error" event).
   */
  refresh(): Promise<boolean> {
    if (!this.fn || this.closed) return Promise.resolve(false);
    this.inFlight ??= this.call().then(
      (t) => {
        this.inFlight = undefined;
        const changed = t !== this.token;
        this.set(t);
        return changed;
      },
      (e: unknown) => {
        this.inFlight = undefined;
        this.onError(e as RelayError);
        this.schedule(RETRY_MS);
        return false;
      },
    );
    return this.inFlight;
  }

  /** The token to connect with: a fresh one if the current one has expired by its own `exp`. */
  async fresh(): Promise<string | undefined> {
    const exp = this.claims()?.exp;
    if (this.inFlight || (this.fn && exp !== undefined && exp * 1000 <= Date.now())) await this.refresh();
    return this.token;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.listeners.clear();
  }

  private async call(): Promise<string> {
    let t: unknown;
    try {
      t = await this.fn!();
    } catch (e) {
      throw new RelayError("unauthorized", `the token function failed: ${asRelayError(e).message}`, { cause: e });
    }
    if (typeof t !== "string" || t === "") throw new RelayError("unauthorized", "the token function must return a non-empty string");
    return t;
  }

  private set(token: string): void {
    if (this.closed) return;
    const changed = token !== this.token;
    this.token = token;
    const { exp, iat } = this.claims() ?? {};
    if (exp !== undefined) {
      const now = Date.now();
      const lifetime = exp * 1000 - (iat === undefined ? now : iat * 1000);
      this.schedule(exp * 1000 - refreshMargin(Math.max(0, lifetime)) - now);
    }
    if (changed) for (const fn of this.listeners) fn();
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    this.timer = setTimeout(() => void this.refresh(), Math.max(0, ms));
    // A pending refresh must not keep a Node process alive on its own.
    (this.timer as { unref?: () => void }).unref?.();
  }
}

/** A token's claims, unverified (jose's decodeJwt); undefined when it is not a JWT. */
export function readTokenClaims(token: string | undefined): Partial<TokenClaims> | undefined {
  if (!token) return undefined;
  try {
    return decodeJwt(token) as Partial<TokenClaims>;
  } catch {
    return undefined;
  }
}
