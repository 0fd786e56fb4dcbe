import { errorFromBody, RelayError } from "../errors.ts";
import type { Snapshot } from "../snapshot.ts";
import { bearer, withRefresh, type TokenOptions } from "./auth.ts";

/**
 * The snapshot routes over HTTP (worker/snapshots.ts lists them): upload in
 * parts then commit, the newest usable snapshot's metadata and parts, hash
 * reports, status and compaction. Used by replicas (bootstrap, reset,
 * automatic snapshots) and by the CLI.
 */
export interface SnapshotClientOptions extends TokenOptions {
  url: string;
  db: string;
  fetch?: typeof fetch;
}

/** A published snapshot as the relay describes it. */
export interface SnapshotInfo {
  id: number;
  seq: number;
  version: number;
  size: number;
  hash: string;
  parts: number;
  sub: string;
  ts: number;
  agreeing: number;
  flagged: boolean;
}

/** The newest usable snapshot, with the schema versions up to it (never trimmed) and the log's retained range. */
export interface LatestSnapshot extends SnapshotInfo {
  schema: { seq: number; version: number; statements: string[] }[];
  /** The highest cseq of the asking client's among trimmed entries (0 when none or not asked). */
  clientCseq: number;
  trimmed: number;
  head: number;
}

export interface RelayStatus {
  head: number;
  trimmed: number;
  snapshots: SnapshotInfo[];
  entries: number;
  entryBytes: number;
  snapshotBytes: number;
  sockets: number;
  settings: Record<string, unknown>;
}

export function snapshotClient(opts: SnapshotClientOptions) {
  const base = `${opts.url.replace(/\/+$/, "")}/v1/db/${encodeURIComponent(opts.db)}`;
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const auth = bearer(opts);
  const call = (path: string, init: RequestInit = {}): Promise<Response> => withRefresh(opts, () => once(path, init));

  async function once(path: string, init: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await doFetch(`${base}${path}`, { ...init, headers: { ...auth(), ...(init.headers as Record<string, string> | undefined) } });
    } catch (cause) {
      if (init.signal?.aborted) throw new RelayError("aborted", "request aborted", { cause });
      throw new RelayError("network", `cannot reach the relay: ${(cause as Error)?.message ?? cause}`, { cause });
    }
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      let body: unknown = null;
      try {
        body = JSON.parse(text);
      } catch {
        // not our error shape
      }
      throw errorFromBody(res.status, body);
    }
    return res;
  }
  const json = async <T>(path: string, body?: unknown, signal?: AbortSignal): Promise<T> =>
    (await (await call(path, { ...(body === undefined ? {} : { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } }), ...(signal ? { signal } : {}) })).json()) as T;

  return {
    /** Upload `s` in parts and commit it; visible to others only once the commit succeeds. */
    async upload(s: Snapshot, onPart?: (done: number, of: number) => void): Promise<SnapshotInfo> {
      const up = await json<{ id: number; parts: number; partBytes: number }>("/snapshots", { seq: s.seq, version: s.version, size: s.bytes.byteLength, hash: s.hash });
      for (let i = 0; i < up.parts; i++) {
        const part = s.bytes.subarray(i * up.partBytes, (i + 1) * up.partBytes);
        await call(`/snapshots/${up.id}/parts/${i}`, { method: "PUT", body: part as Uint8Array<ArrayBuffer>, headers: { "content-type": "application/octet-stream" } });
        onPart?.(i + 1, up.parts);
      }
      return json<SnapshotInfo>(`/snapshots/${up.id}/commit`, {});
    },
    /** The newest usable snapshot, or undefined when there is none. */
    /** `at`: the newest at or below that seq (a point-in-time export). */
    async latest(client?: string, signal?: AbortSignal, at?: number): Promise<LatestSnapshot | undefined> {
      const q = new URLSearchParams();
      if (client) q.set("client", client);
      if (at !== undefined) q.set("at", String(at));
      try {
        return await json<LatestSnapshot>(`/snapshot?${q}`, undefined, signal);
      } catch (e) {
        if (e instanceof RelayError && e.code === "not_found") return undefined;
        throw e;
      }
    },
    /** A snapshot's bytes, part by part (`onPart` reports progress). */
    async download(info: SnapshotInfo, signal?: AbortSignal, onPart?: (bytes: number, of: number) => void): Promise<Uint8Array> {
      const out = new Uint8Array(info.size);
      let at = 0;
      for (let i = 0; i < info.parts; i++) {
        const part = new Uint8Array(await (await call(`/snapshots/${info.id}/parts/${i}`, signal ? { signal } : {})).arrayBuffer());
        if (at + part.byteLength > info.size) throw new RelayError("internal", `snapshot ${info.id} is longer than ${info.size} bytes`);
        out.set(part, at);
        at += part.byteLength;
        onPart?.(at, info.size);
      }
      if (at !== info.size) throw new RelayError("internal", `snapshot ${info.id}: got ${at} of ${info.size} bytes`);
      return out;
    },
    report(seq: number, hash: string): Promise<SnapshotInfo[]> {
      return json("/hashes", { seq, hash });
    },
    status(): Promise<RelayStatus> {
      return json("/status");
    },
    compact(): Promise<{ trimmed: number; entries: number; snapshots: number }> {
      return json("/compact", {});
    },
  };
}

export type SnapshotClient = ReturnType<typeof snapshotClient>;
