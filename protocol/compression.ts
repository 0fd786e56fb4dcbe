/**
 * Compression on the wire: gzip, the one encoding every runtime has both as
 * `CompressionStream`/`DecompressionStream` (Workers, browsers, Node, Deno,
 * Bun) and inside `fetch`. This file is the negotiation both sides follow;
 * the relay's bounded inflating reader is worker/body.ts, the client's gzip
 * client/gzip.ts.
 *
 * - Push bodies: the client gzips a body of COMPRESS_MIN_BYTES or more and
 *   sends `Content-Encoding: gzip`; the relay inflates it, counting the
 *   inflated bytes against the same body limit as plain ones, so a zip bomb
 *   is refused after `limit` bytes instead of being inflated whole.
 * - Pull responses: the relay answers `Content-Encoding: gzip` when the
 *   request's `Accept-Encoding` allows gzip and the body is
 *   COMPRESS_MIN_BYTES or more; fetch inflates it for the client.
 * - Socket frames: none. Live frames are a few hundred bytes; the relay
 *   declines permessage-deflate (worker/socket.ts says why), and anything large
 *   (a backlog, a big entry) goes over HTTP pulls, which are compressed.
 *
 * Changesets compress well (repeated table headers, op bytes and type tags,
 * similar values in consecutive rows): the W1 rows go from 61 bytes per row
 * to about 8 (level 6) or 11 (level 1).
 */
export const GZIP = "gzip";

/** Below this, gzip's ~20 bytes of framing and the CPU are not worth it. */
export const COMPRESS_MIN_BYTES = 1024;

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
