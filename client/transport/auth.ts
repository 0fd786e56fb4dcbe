import { RelayError } from "../errors.ts";

/** How the HTTP clients (http.ts, snapshots.ts) get their token (see client/token.ts). */
export interface TokenOptions {
  /** The token, or a getter read on every request. */
  token?: string | undefined | (() => string | undefined);
  /** After an `unauthorized` answer: resolves true when a new token arrived, and the request is sent once more with it. */
  refreshToken?: () => Promise<boolean>;
}

/** The Authorization header for the current token (none without one). */
export function bearer(opts: TokenOptions): () => Record<string, string> {
  const token = typeof opts.token === "function" ? opts.token : () => opts.token as string | undefined;
  return () => {
    const t = token();
    return t ? { authorization: `Bearer ${t}` } : {};
  };
}

/** Send; after an `unauthorized` answer, once more if a new token arrived meanwhile. */
export async function withRefresh<T>(opts: TokenOptions, send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (e) {
    if (!(e instanceof RelayError && e.code === "unauthorized" && opts.refreshToken && (await opts.refreshToken()))) throw e;
    return send();
  }
}
