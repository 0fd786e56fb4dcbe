import { gzipSync } from "node:zlib";
import { COMPRESS_MIN_BYTES, GZIP } from "../protocol/compression.ts";

/**
 * A pull page as the client will receive it: gzipped here when it is
 * COMPRESS_MIN_BYTES or more (the caller has checked Accept-Encoding), with
 * node:zlib (native in workerd) and sent as is (encodeBody "manual").
 *
 * The runtime's own encoding (a Content-Encoding header and encodeBody
 * "automatic") always compresses at zlib's default level 6, ~12 ms of the
 * Worker's CPU per MB: ~70 ms for W1's 6 MB page before its first byte
 * leaves. So pages up to SMALL_PAGE_BYTES keep level 6 (a few ms; on a slow
 * link their bytes are what counts: W4's bootstrap is 379 KiB at level 6,
 * 442 at level 1), larger ones go at level 1 (~3 ms per MB; W1's page 10.9
 * instead of 8.2 bytes per row), the client's push level (client/gzip.ts).
 */
export const SMALL_PAGE_BYTES = 1024 * 1024;

export async function compressedPage(res: Response): Promise<Response> {
  const body = new Uint8Array(await res.arrayBuffer());
  const headers = new Headers(res.headers);
  headers.append("vary", "accept-encoding");
  if (body.byteLength < COMPRESS_MIN_BYTES) return new Response(body, { status: res.status, headers });
  headers.set("content-encoding", GZIP);
  const level = body.byteLength <= SMALL_PAGE_BYTES ? 6 : 1;
  return new Response(gzipSync(body, { level }), { status: res.status, headers, encodeBody: "manual" });
}
