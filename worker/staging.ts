import { RelayError } from "../protocol/errors.ts";

/**
 * Uploads in parts, the rules snapshots (snapshot-store.ts) and parted log
 * entries (entry-parts.ts) share: a staged upload is invisible until its last
 * part makes it whole in one transaction; parts are numbered and each but the
 * last has exactly the part size, so sending a part again replaces it with
 * the same bytes (idempotent); an upload not finished within UPLOAD_TTL_MS is
 * abandoned, and cleared when the next upload of its kind starts.
 */
export const UPLOAD_TTL_MS = 60 * 60 * 1000;

/** Uploads started before this are abandoned. */
export function abandonedBefore(now: number): number {
  return now - UPLOAD_TTL_MS;
}

/** How many parts of `partBytes` an upload of `size` bytes takes. */
export function partCount(size: number, partBytes: number): number {
  return Math.ceil(size / partBytes);
}

/** Part `idx` of an upload of `size` bytes is in range and `length` long (each but the last exactly `partBytes`). */
export function checkPart(idx: number, length: number, size: number, partBytes: number): void {
  const parts = partCount(size, partBytes);
  if (!Number.isSafeInteger(idx) || idx < 0 || idx >= parts) throw new RelayError("bad_request", `part ${idx} is not in 0..${parts - 1}`);
  const want = idx < parts - 1 ? partBytes : size - partBytes * (parts - 1);
  if (length !== want) throw new RelayError("bad_request", `part ${idx} must be ${want} bytes, got ${length}`);
}

/**
 * The smallest part size an upload may be cut in, whatever the relay's own
 * (a bound on rows and requests per entry): the relay's part size if smaller.
 */
export const MIN_PART_BYTES = 64 * 1024;

/**
 * An upload's part size, chosen by its client (what /v1/health said when it
 * started): any from min(MIN_PART_BYTES, the relay's part size) up to what
 * one request carries. A relay reconfigured meanwhile keeps taking it.
 */
export function checkCut(cut: number, partBytes: number, requestBytes: number): void {
  const lo = Math.min(MIN_PART_BYTES, partBytes);
  if (!Number.isSafeInteger(cut) || cut < lo) throw new RelayError("bad_request", `parts of ${cut} bytes: this relay takes parts of ${lo}..${requestBytes} bytes (ask /v1/health again)`);
  if (cut > requestBytes) throw new RelayError("payload_too_large", `parts of ${cut} bytes: this relay takes at most ${requestBytes} per request (ask /v1/health again)`);
}
