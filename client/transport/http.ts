import { decode, encode } from "../../protocol/codec.ts";
import { errorFromBody, RelayError } from "../errors.ts";
import { parsePullResponse, parsePushResponse, type HealthResponse, type PullResponse, type PushEntry, type PushResponse } from "../../protocol/messages.ts";
import { MSGPACK } from "../../protocol/version.ts";
import type { SchemaVersion } from "../../protocol/schema.ts";
import { COMPRESS_MIN_BYTES, GZIP } from "../../protocol/compression.ts";
import { gzip } from "../gzip.ts";
import { bearer, withRefresh, type TokenOptions } from "./auth.ts";

/** How the sync engine reaches the relay. HTTP here; tests wrap it to inject faults. */
export interface Transport {
  /** `schema`: versions the log may lack, appended before the entries. */
  push(client: string, entries: PushEntry[], signal?: AbortSignal, schema?: SchemaVersion[]): Promise<PushResponse>;
  pull(after: number, limit?: number, signal?: AbortSignal): Promise<PullResponse>;
  /** The relay's /v1/health: its limits (optional: a transport without it leaves the defaults). */
  health?(signal?: AbortSignal): Promise<HealthResponse>;
}

export interface HttpTransportOptions extends TokenOptions {
  url: string;
  db: string;
  fetch?: typeof fetch;
  /** Give up on a request after this long (default 30 s): a relay that accepts and never answers must not stall sync. */
  timeoutMs?: number;
}

export function httpTransport(opts: HttpTransportOptions): Transport {
  const base = `${opts.url.replace(/\/+$/, "")}/v1/db/${encodeURIComponent(opts.db)}`;
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const auth = bearer(opts);

  const timeoutMs = opts.timeoutMs ?? 30_000;

  const call = (path: string, init: () => RequestInit, caller?: AbortSignal): Promise<unknown> => withRefresh(opts, () => once(path, init(), caller));

  async function once(path: string, init: RequestInit, caller?: AbortSignal): Promise<unknown> {
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
      const body = zipped ? await gzip(plain) : plain;
      const init = (): RequestInit => ({ method: "POST", body, headers: { ...auth(), "content-type": MSGPACK, ...(zipped ? { "content-encoding": GZIP } : {}) } });
      return parsePushResponse(await call("/push", init, signal));
    },
    async pull(after, limit, signal) {
      const q = new URLSearchParams({ after: String(after) });
      if (limit !== undefined) q.set("limit", String(limit));
      return parsePullResponse(await call(`/pull?${q}`, () => ({ headers: auth() }), signal));
    },
    async health(signal) {
      const timeout = AbortSignal.timeout(timeoutMs);
      const res = await doFetch(`${opts.url.replace(/\/+$/, "")}/v1/health`, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
      if (!res.ok) throw new RelayError("network", `GET /v1/health answered ${res.status}`);
      return (await res.json()) as HealthResponse;
    },
  };
}
