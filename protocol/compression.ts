import { RelayError } from "./errors.ts";

/**
 * Compression on the wire: gzip, the one encoding every runtime has both as
 * `CompressionStream`/`DecompressionStream` (Workers, browsers, Node, Deno,
 * Bun) and inside `fetch`.
 *
 * - Push bodies: the client gzips a body of COMPRESS_MIN_BYTES or more and
 *   sends `Content-Encoding: gzip`; the relay inflates it, counting the
 *   inflated bytes against the same body limit as plain ones, so a zip bomb
 *   is refused after `limit` bytes instead of being inflated whole.
 * - Pull responses: the relay answers `Content-Encoding: gzip` when the
 *   request's `Accept-Encoding` allows gzip and the body is
 *   COMPRESS_MIN_BYTES or more; fetch inflates it for the client.
 * - Socket frames: none. Live frames are a few hundred bytes; the relay
 *   declines permessage-deflate (worker/log.ts says why), and anything large
 *   (a backlog, a big entry) goes over HTTP pulls, which are compressed.
 *
 * Changesets compress well (repeated table headers, op bytes and type tags,
 * similar values in consecutive rows): the W1 rows go from 61 bytes per row
 * to about 8 (level 6) or 11 (level 1).
 */
export const GZIP = "gzip";

/** Below this, gzip's ~20 bytes of framing and the CPU are not worth it. */
export const COMPRESS_MIN_BYTES = 1024;

/**
 * Compressed input is fed to the inflater in slices this large: one slice
 * inflates to at most ~1032× its size (deflate's limit), so at most ~16 MiB
 * is produced before the limit is checked again.
 */
const INFLATE_SLICE_BYTES = 16 * 1024;

interface NodeZlib {
  gzip(data: Uint8Array, options: { level: number }, callback: (error: Error | null, result: Uint8Array) => void): void;
}

/** node:zlib where the runtime has it (asked at run time, so bundlers for browsers never see it). */
const nodeZlib = (() => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
    return proc?.getBuiltinModule?.("node:zlib") as NodeZlib | undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Gzip a body. CompressionStream has no level and compresses at zlib's
 * default (6); where node:zlib is at hand, level 1 on its thread pool: four
 * times less CPU (~22 ms instead of ~90 for W1's 6 MB push) for 10.9 instead
 * of 8.2 bytes per row.
 */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  if (nodeZlib) {
    const zlib = nodeZlib;
    return new Promise((resolve, reject) =>
      zlib.gzip(bytes, { level: 1 }, (error, result) => (error ? reject(error) : resolve(result as Uint8Array<ArrayBuffer>))),
    );
  }
  return gzipStream(bytes);
}

/** Gzip with CompressionStream, which every runtime has (browsers, workerd, Deno, Bun, Node). */
export async function gzipStream(bytes: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream(GZIP));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Whether an Accept-Encoding header admits gzip (`gzip;q=0` refuses it; `*` admits it). */
export function acceptsGzip(header: string | null | undefined): boolean {
  if (!header) return false;
  let star: boolean | undefined;
  for (const part of header.toLowerCase().split(",")) {
    const [coding = "", ...params] = part.split(";").map((s) => s.trim());
    const q = params.find((p) => p.startsWith("q="));
    const ok = q === undefined || Number(q.slice(2)) > 0;
    if (coding === GZIP || coding === "x-gzip") return ok;
    if (coding === "*") star = ok;
  }
  return star ?? false;
}

/**
 * Read a request body of the given Content-Encoding (none or gzip) to its
 * end, refusing it as soon as the raw or the inflated size passes `limit`:
 * nothing larger than the limit (plus one inflated slice) is ever held.
 * Unknown encodings are `unsupported_media_type` (RFC 9110 §15.5.16);
 * broken gzip is `bad_request`.
 */
export async function readBody(body: ReadableStream<Uint8Array> | null, encoding: string | null, limit: number): Promise<Uint8Array> {
  const coding = (encoding ?? "identity").trim().toLowerCase();
  if (coding !== "identity" && coding !== GZIP && coding !== "x-gzip") {
    throw new RelayError("unsupported_media_type", `Content-Encoding "${encoding}" is not supported (use gzip)`);
  }
  if (!body) return new Uint8Array(0);
  if (coding === "identity") return readLimited(body, limit, "request body");
  const inflated = body.pipeThrough(slicer(INFLATE_SLICE_BYTES, limit)).pipeThrough(new DecompressionStream(GZIP));
  try {
    return await readLimited(inflated, limit, "inflated request body");
  } catch (e) {
    if (e instanceof RelayError) throw e;
    throw new RelayError("bad_request", "request body is not valid gzip", { cause: e });
  }
}

async function readLimited(stream: ReadableStream<Uint8Array>, limit: number, what: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw new RelayError("payload_too_large", `${what} exceeds ${limit} bytes`);
    }
    parts.push(value);
  }
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Splits chunks into pieces of at most `max` bytes (views, no copies); errors once more than `limit` bytes came in. */
function slicer(max: number, limit: number): TransformStream<Uint8Array, Uint8Array<ArrayBuffer>> {
  let size = 0;
  return new TransformStream({
    transform(chunk, controller) {
      size += chunk.byteLength;
      if (size > limit) throw new RelayError("payload_too_large", `request body exceeds ${limit} bytes`);
      for (let at = 0; at < chunk.byteLength; at += max) controller.enqueue(chunk.subarray(at, at + max) as Uint8Array<ArrayBuffer>);
    },
  });
}
