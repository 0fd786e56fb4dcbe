import { decode, encode } from "../../protocol/codec.ts";
import { errorFromBody, RelayError } from "../errors.ts";
import { parsePullResponse, parsePushResponse, type EntryPart, type HealthResponse, type LogEntry, type PullResponse, type PushEntry, type PushResponse } from "../../protocol/messages.ts";
import { MSGPACK } from "../../protocol/version.ts";
import type { SchemaVersion } from "../../protocol/schema.ts";
import { COMPRESS_MIN_BYTES, GZIP } from "../../protocol/compression.ts";
import { gzip } from "../gzip.ts";
import { bearer, withRefresh, type TokenOptions } from "./auth.ts";
import { PARTS_IN_FLIGHT } from "../parts.ts";

/** How the sync engine reaches the relay. HTTP here; tests wrap it to inject faults. */
export interface Transport {
  /** `schema`: versions the log may lack, appended before the entries. */
  push(client: string, entries: PushEntry[], signal?: AbortSignal, schema?: SchemaVersion[]): Promise<PushResponse>;
  pull(after: number, limit?: number, signal?: AbortSignal): Promise<PullResponse>;
  /** The relay's /v1/health: its limits (optional: a transport without it leaves the defaults). */
  health?(signal?: AbortSignal): Promise<HealthResponse>;
  /**
   * One part of an entry larger than one request (a relay whose health
   * names `limits.partBytes`): the response acks the entry once the log has
   * it. Optional: without it, entries are limited to what one request carries.
   */
  pushPart?(client: string, part: EntryPart, signal?: AbortSignal): Promise<PushResponse>;
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

  const call = (path: string, init: () => RequestInit, caller?: AbortSignal): Promise<unknown> => withRefresh(opts, async () => decode(await once(path, init(), caller)));

  async function once(path: string, init: RequestInit, caller?: AbortSignal): Promise<Uint8Array> {
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
    return bytes;
  }

  /** Body bytes, plain or gzipped: larger ones go gzipped (see protocol/compression.ts). */
  async function compressed(plain: Uint8Array): Promise<{ body: Uint8Array; headers: Record<string, string> }> {
    if (plain.byteLength < COMPRESS_MIN_BYTES) return { body: plain, headers: {} };
    return { body: await gzip(plain), headers: { "content-encoding": GZIP } };
  }

  /**
   * Entries a page lists by size (larger than a part) are fetched part by
   * part into one buffer of that size, which the page then holds: one copy
   * of the changeset, applied from there.
   */
  async function fetchParts(entry: LogEntry, signal?: AbortSignal): Promise<void> {
    const out = new Uint8Array(entry.size!);
    const get = (idx: number) => withRefresh(opts, () => once(`/entries/${entry.seq}/parts/${idx}`, { headers: auth() }, signal));
    // The first part's length is the relay's part size: then PARTS_IN_FLIGHT at a time, each copied in place as it comes.
    const first = await get(0);
    const partBytes = first.byteLength;
    if (partBytes === 0 || partBytes > out.byteLength) throw new RelayError("internal", `entry ${entry.seq}: a first part of ${partBytes} bytes for ${out.byteLength}`);
    const parts = Math.ceil(out.byteLength / partBytes);
    out.set(first);
    const place = (idx: number, part: Uint8Array) => {
      const want = Math.min(partBytes, out.byteLength - idx * partBytes);
      if (part.byteLength !== want) throw new RelayError("internal", `part ${idx} of entry ${entry.seq} is ${part.byteLength} bytes, not ${want}`);
      out.set(part, idx * partBytes);
    };
    const flying: Promise<void>[] = [];
    try {
      for (let idx = 1; idx < parts; idx++) {
        flying.push(get(idx).then((part) => place(idx, part)));
        if (flying.length >= PARTS_IN_FLIGHT) await flying.shift();
      }
      while (flying.length > 0) await flying.shift();
    } finally {
      for (const f of flying) f.catch(() => undefined);
    }
    entry.changeset = out;
    delete entry.size;
  }

  return {
    async push(client, entries, signal, schema) {
      // Pull responses come back gzipped when large, and fetch inflates them.
      const { body, headers } = await compressed(encode(schema?.length ? { client, schema, entries } : { client, entries }));
      const init = (): RequestInit => ({ method: "POST", body: body as Uint8Array<ArrayBuffer>, headers: { ...auth(), "content-type": MSGPACK, ...headers } });
      return parsePushResponse(await call("/push", init, signal));
    },
    async pushPart(client, part, signal) {
      const { body, headers } = await compressed(part.data);
      const q = new URLSearchParams({ size: String(part.size), v: String(part.v), ...(part.part === undefined ? {} : { part: String(part.part) }) });
      const init = (): RequestInit => ({ method: "PUT", body: body as Uint8Array<ArrayBuffer>, headers: { ...auth(), "content-type": "application/octet-stream", ...headers } });
      return parsePushResponse(await call(`/push/${encodeURIComponent(client)}/${part.cseq}/parts/${part.idx}?${q}`, init, signal));
    },
    async pull(after, limit, signal) {
      // parts=1: entries larger than a part come listed by size (relays without parts ignore it and send them whole).
      const q = new URLSearchParams({ after: String(after), parts: "1" });
      if (limit !== undefined) q.set("limit", String(limit));
      const page = parsePullResponse(await call(`/pull?${q}`, () => ({ headers: auth() }), signal));
      for (const e of page.entries) if (e.size !== undefined) await fetchParts(e, signal);
      return page;
    },
    async health(signal) {
      const timeout = AbortSignal.timeout(timeoutMs);
      const res = await doFetch(`${opts.url.replace(/\/+$/, "")}/v1/health`, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
      if (!res.ok) throw new RelayError("network", `GET /v1/health answered ${res.status}`);
      return (await res.json()) as HealthResponse;
    },
  };
}
