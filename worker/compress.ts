import { gzipSync } from "node:zlib";
import { COMPRESS_MIN_BYTES, GZIP } from "../protocol/compression.ts";

/**
 * A pull page as the client will receive it: gzipped here when it is
 * COMPRESS_MIN_BYTES or more (the caller has checked Accept-Encoding).
 *
 * Level 1, with node:zlib (native in workerd), sent as is (encodeBody
 * "manual"). The runtime's own encoding (a Content-Encoding header and
 * encodeBody "automatic") compresses at zlib's default level 6 and no level
 * can be asked of it: ~70 ms of the Worker's CPU for W1's 6 MB page against
 * ~17 at level 1, for 10.9 instead of 8.2 bytes per row, the client's push
 * level too (client/gzip.ts).
 */
export const PULL_GZIP_LEVEL = 1;

export async function compressedPage(res: Response): Promise<Response> {
  const body = new Uint8Array(await res.arrayBuffer());
  const headers = new Headers(res.headers);
  headers.append("vary", "accept-encoding");
  if (body.byteLength < COMPRESS_MIN_BYTES) return new Response(body, { status: res.status, headers });
  headers.set("content-encoding", GZIP);
  return new Response(gzipSync(body, { level: PULL_GZIP_LEVEL }), { status: res.status, headers, encodeBody: "manual" });
}
