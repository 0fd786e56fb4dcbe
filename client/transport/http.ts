import { decode, encode } from "../../protocol/codec.ts";
import { errorFromBody, RelayError } from "../errors.ts";
import { parsePullResponse, parsePushResponse, type PullResponse, type PushEntry, type PushResponse } from "../../protocol/messages.ts";
import { MSGPACK } from "../../protocol/version.ts";
import type { SchemaVersion } from "../../protocol/schema.ts";
import { COMPRESS_MIN_BYTES, GZIP } from "../../protocol/compression.ts";
import { gzip } from "../gzip.ts";

/** How the sync engine reaches the relay. HTTP here; tests wrap it to inject faults. */
export interface Transport {
  /** `schema`: versions the log may lack, appended before the entries. */
  push(client: string, entries: PushEntry[], signal?: AbortSignal, schema?: SchemaVersion[]): Promise<PushResponse>;
  pull(after: number, limit?: number, signal?: AbortSignal): Promise<PullResponse>;
}

export interface HttpTransportOptions {
  url: string;
  db: string;
  token?: string | undefined;
  fetch?: typeof fetch;
  /** Give up on a request after this long (default 30 s): a relay that accepts and never answers must not stall sync. */
  timeoutMs?: number;
}

export function httpTransport(opts: HttpTransportOptions): Transport {
  const base = `${opts.url.replace(/\/+$/, "")}/v1/db/${encodeURIComponent(opts.db)}`;
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const auth: Record<string, string> = opts.token ? { authorization: `Bearer ${opts.token}` } : {};

  const timeoutMs = opts.timeoutMs ?? 30_000;

  async function call(path: string, init: RequestInit, caller?: AbortSignal): Promise<unknown> {
    const timeout = AbortSignal.timeout(timeoutMs);
    init.signal = caller ? AbortSignal.any([caller, timeout]) : timeout;
    // The caller's abort is "aborted" (stop); our timeout is a retryable network failure.
    const failed = (what: string, cause: unknown) =>
      caller?.aborted
        ? new RelayError("aborted", "request aborted", { cause })
        : timeout.aborted
          ? new RelayError("network", `the relay did not answer within ${timeoutMs} ms`, { cause })
          : new RelayError("network", `${what}: ${(cause as Error)?.message ?? cause}`, { cause });
    let res: Response;
    try {
      res = await doFetch(`${base}${path}`, init);
    } catch (cause) {
      throw failed("cannot reach the relay", cause);
    }
    const bytes = new Uint8Array(await res.arrayBuffer().catch((cause) => {
      throw failed("connection lost while reading the response", cause);
    }));
    if (!res.ok) {
      let body: unknown = null;
      try {
        body = JSON.parse(new TextDecoder().decode(bytes));
      } catch {
        // Not our error shape (a proxy's page, say): errorFromBody classifies by status.
      }
      const retryAfter = Number(res.headers.get("retry-after"));
      return Promise.reject(errorFromBody(res.status, body, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined));
    }
    return decode(bytes);
  }

  return {
    async push(client, entries, signal, schema) {
      // Larger bodies go gzipped (see protocol/compression.ts); pull
      // responses come back gzipped when large, and fetch inflates them.
      const plain = encode(schema?.length ? { client, schema, entries } : { client, entries });
      const zipped = plain.byteLength >= COMPRESS_MIN_BYTES;
      const headers = { ...auth, "content-type": MSGPACK, ...(zipped ? { "content-encoding": GZIP } : {}) };
      const init: RequestInit = { method: "POST", body: zipped ? await gzip(plain) : plain, headers };
      return parsePushResponse(await call("/push", init, signal));
    },
    async pull(after, limit, signal) {
      const q = new URLSearchParams({ after: String(after) });
      if (limit !== undefined) q.set("limit", String(limit));
      return parsePullResponse(await call(`/pull?${q}`, { headers: auth }, signal));
    },
  };
}
