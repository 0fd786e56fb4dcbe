import { createGunzip } from "node:zlib";
import { RelayError } from "../protocol/errors.ts";
import { GZIP } from "../protocol/compression.ts";

/**
 * Request bodies, read with a bound. A plain body is held as it arrives and
 * refused once it passes the limit. A gzip body is inflated twice: first
 * while it streams in, keeping only the compressed bytes and counting what
 * they inflate to (refused the moment the count passes the limit), then once
 * more into one buffer of exactly the counted size. So a zip bomb costs the
 * relay its compressed bytes and one output chunk, not the limit: four bombs
 * at once hold four compressed bodies, not 4 × 32 MiB (measured by
 * `npm run test:load`). The second pass costs CPU only for bodies that fit.
 *
 * node:zlib (native in workerd with nodejs_compat, as in Node), streaming:
 * it hands output over in chunks of OUTPUT_CHUNK_BYTES and stops when
 * destroyed, so the count is exact to a chunk. Not pako, which this used
 * before: the same passes in JavaScript cost ~4× the CPU (two passes over
 * W1's 6 MB push: ~90 ms of the relay's time against ~20). Not the runtime's
 * DecompressionStream: workerd's inflates whatever is written without waiting
 * for a reader (a 4 MiB body of 4 GiB of zeros peaked at 1.4 GB).
 */

/** Output arrives in chunks of this size, each freed right after it is counted or copied. */
const OUTPUT_CHUNK_BYTES = 64 * 1024;

/**
 * Read a push body (plain or gzip), refused as soon as it, or what it
 * inflates to, passes `limit` (a declared length above it is refused unread),
 * and hand it to `use`; its memory is released when `use` settles, not
 * whenever the collector gets to it. `use` must not keep views of it.
 */
export async function withPushBody<T>(request: Request, limit: number, use: (bytes: Uint8Array) => Promise<T>): Promise<T> {
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > limit) throw new RelayError("payload_too_large", `request body declares ${declared} bytes; the limit is ${limit}`);
  const bytes = await readBody(request.body, request.headers.get("content-encoding"), limit, Number.isSafeInteger(declared) ? declared : undefined);
  try {
    return await use(bytes);
  } finally {
    free(bytes);
  }
}

/**
 * Read and drop a body that is refused for another reason than its size
 * (`overloaded`), up to `limit` bytes: answering before a client has sent
 * its body resets the connection under it, and fetch then reports a network
 * error instead of the answer and its Retry-After.
 */
export async function discardBody(request: Request, limit: number): Promise<void> {
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (request.body && !(declared > limit)) await drain(request.body.getReader(), limit);
}

/**
 * Read a request body of the given Content-Encoding (none or gzip) to its
 * end, refusing it as soon as the raw or the inflated size passes `limit`.
 * Unknown encodings are `unsupported_media_type` (RFC 9110 §15.5.16);
 * broken gzip is `bad_request`.
 */
export async function readBody(body: ReadableStream<Uint8Array> | null, encoding: string | null, limit: number, declared?: number): Promise<Uint8Array> {
  const coding = (encoding ?? "identity").trim().toLowerCase();
  if (coding !== "identity" && coding !== GZIP && coding !== "x-gzip") {
    throw new RelayError("unsupported_media_type", `Content-Encoding "${encoding}" is not supported (use gzip)`);
  }
  if (!body) return new Uint8Array(0);
  if (coding === "identity") return readPlain(body, limit, declared);
  let inflated = 0;
  const counter = inflater((bytes) => {
    inflated += bytes.byteLength;
    if (inflated > limit) throw new RelayError("payload_too_large", `inflated request body exceeds ${limit} bytes`);
  });
  let compressed: Uint8Array[];
  try {
    compressed = await readLimited(body, limit, (chunk) => counter.push(chunk));
  } catch (e) {
    counter.abort();
    throw e;
  }
  await counter.end();
  // Again, now that the size is known to fit: into one buffer of that size.
  const out = new Uint8Array(inflated);
  let at = 0;
  const filler = inflater((bytes) => {
    // Only a body that changed between the passes could overflow; the check keeps `set` from throwing a RangeError.
    if (at + bytes.byteLength > out.byteLength) throw new RelayError("bad_request", "request body inflated differently twice");
    out.set(bytes, at);
    at += bytes.byteLength;
  });
  for (const chunk of compressed) filler.push(chunk);
  await filler.end();
  for (const chunk of compressed) free(chunk);
  return out;
}

/** The chunks of a stream, each passed to `each` as it arrives (and kept, unless told not to); refused once more than `limit` bytes came. */
async function readLimited(stream: ReadableStream<Uint8Array>, limit: number, each: (chunk: Uint8Array) => void, keep = true): Promise<Uint8Array[]> {
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return parts;
      size += value.byteLength;
      if (size > limit) throw new RelayError("payload_too_large", `request body exceeds ${limit} bytes`);
      if (keep) parts.push(value);
      each(value);
    }
  } catch (e) {
    // Refused for its size: still read (and drop) what the client sends, up
    // to the limit once more and for at most a second, before answering. A server that answers and
    // closes with the request unread resets the connection, and the client
    // loses the answer with it (the 413 of a gzip bomb became a network
    // error). Nothing read now is kept or inflated.
    if (e instanceof RelayError && e.code === "payload_too_large") await drain(reader, limit);
    await reader.cancel().catch(() => undefined);
    if (e instanceof RelayError) throw e;
    // The runtime errors the body when the client's connection ends before Content-Length bytes came.
    throw new RelayError("bad_request", "request body ended early (connection lost before Content-Length bytes)", { cause: e });
  }
}

/** How long a refused body is drained at most: a client that stops sending (or sends slowly) gets its answer anyway. */
const DRAIN_MS = 1000;

/** Read and drop up to `limit` bytes, for at most DRAIN_MS. */
async function drain(reader: ReadableStreamDefaultReader<Uint8Array>, limit: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), DRAIN_MS)));
  try {
    for (let size = 0; size <= limit; ) {
      const next = await Promise.race([reader.read(), timeout]);
      if (next === "timeout" || next.done) return;
      size += next.value.byteLength;
      free(next.value);
    }
  } catch {
    // the client went away
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/**
 * A plain body, copied into one buffer as it arrives (each chunk freed once
 * copied), so it is held once, not twice. The buffer takes the declared
 * length (already checked against the limit: the runtime delivers no more than
 * Content-Length says) or grows by doubling when the body is chunked.
 */
async function readPlain(body: ReadableStream<Uint8Array>, limit: number, declared: number | undefined): Promise<Uint8Array> {
  let out = new Uint8Array(declared ?? 0);
  let size = 0;
  await readLimited(body, limit, (chunk) => {
    if (size + chunk.byteLength > out.byteLength) {
      const grown = new Uint8Array(Math.min(limit, Math.max(size + chunk.byteLength, 2 * out.byteLength)));
      grown.set(out.subarray(0, size));
      free(out);
      out = grown;
    }
    out.set(chunk, size);
    size += chunk.byteLength;
    free(chunk);
  }, false);
  return out.subarray(0, size);
}

/**
 * Release a buffer's memory now rather than at the collector's next pass:
 * detaching it (transfer(0)) frees its backing store at once. V8 collects
 * large buffers only after tens of MiB of them pile up, which is the whole
 * budget of a request.
 */
function free(bytes: Uint8Array): void {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) (bytes.buffer as ArrayBuffer & { transfer(length: number): ArrayBuffer }).transfer(0);
}

/**
 * A gzip inflater (concatenated members allowed, CRCs checked): `onData` sees
 * each piece of output, at most OUTPUT_CHUNK_BYTES, and may throw to stop it;
 * `push` throws what stopped it. Each piece is freed as soon as `onData`
 * returns when it is a whole buffer (zlib starts a new one once one is full,
 * and hands over views of a buffer it still fills otherwise), so inflating
 * leaves little garbage behind for the collector to catch up with. `end`
 * waits for the rest of the output; broken or truncated gzip, and bytes after
 * its end, are `bad_request`. `abort` stops it, its output unwanted.
 */
function inflater(onData: (bytes: Uint8Array) => void): { push(chunk: Uint8Array): void; end(): Promise<void>; abort(): void } {
  const gunzip = createGunzip({ chunkSize: OUTPUT_CHUNK_BYTES });
  let failure: unknown;
  const stop = (e: unknown) => {
    failure ??= e;
    gunzip.destroy();
  };
  gunzip.on("data", (bytes: Uint8Array) => {
    if (failure !== undefined) return;
    try {
      onData(bytes);
      free(bytes);
    } catch (e) {
      stop(e);
    }
  });
  const done = new Promise<void>((resolve) => {
    gunzip.on("end", resolve);
    gunzip.on("close", resolve);
    gunzip.on("error", (e: Error) => {
      stop(new RelayError("bad_request", `request body is not valid gzip (${e.message})`));
      resolve();
    });
  });
  return {
    push(chunk) {
      if (failure !== undefined) throw failure;
      gunzip.write(chunk);
    },
    async end() {
      if (failure === undefined) gunzip.end();
      await done;
      if (failure !== undefined) throw failure;
    },
    abort: () => stop(new RelayError("bad_request", "request body not read to its end")),
  };
}
