import { RelayError } from "../protocol/errors.ts";
import { GZIP } from "../protocol/compression.ts";

/**
 * Request bodies, read with a bound: the relay never holds more than its body
 * limit (plus one inflated slice), plain or gzip (protocol/compression.ts).
 */

/**
 * Compressed input is fed to the inflater in slices this large: one slice
 * inflates to at most ~1032× its size (deflate's limit), so at most ~16 MiB
 * is produced before the limit is checked again.
 */
const INFLATE_SLICE_BYTES = 16 * 1024;

/** A push body (plain or gzip), refused as soon as it, or what it inflates to, passes `limit`; a declared length above it is refused unread. */
export async function readPushBody(request: Request, limit: number): Promise<Uint8Array> {
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > limit) throw new RelayError("payload_too_large", `request body exceeds ${limit} bytes`);
  return readBody(request.body, request.headers.get("content-encoding"), limit);
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
