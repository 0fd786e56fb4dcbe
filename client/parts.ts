import { scan } from "../protocol/changeset.ts";
import { RelayError } from "./errors.ts";
import type { EntryPart, LogEntry, PushResponse } from "../protocol/messages.ts";

/**
 * Transactions of any size, on the client (issue 18): how large a write may
 * be, and how an entry larger than one request goes up in parts. What the
 * relay allows is learned from its /v1/health (replica.ts keeps it).
 */
export interface EntryLimits {
  /** The largest changeset one request carries (the relay's `limits.maxEntryBytes`). */
  requestBytes: number;
  /** Entries larger go up (and come down) in parts of this size; undefined: the relay takes no parts. */
  partBytes: number | undefined;
  /** The largest entry in parts (`limits.maxPartedEntryBytes`). */
  partedBytes: number;
}

/** Whether an entry of `size` bytes is pushed in parts (the relay takes them, and it passes one). */
export function goesInParts(size: number, limits: EntryLimits): boolean {
  return limits.partBytes !== undefined && size > limits.partBytes;
}

/**
 * Refuse at commit (invariant 8) a changeset the relay could never take:
 * above one request when it takes no parts (an older relay), else above its
 * per-entry limit, or holding one change (one row) larger than a request
 * (the relay validates a parted entry one chunk and one change at a time).
 */
export function checkEntrySize(changeset: Uint8Array, limits: EntryLimits): void {
  const size = changeset.byteLength;
  if (size <= limits.requestBytes) return;
  const max = limits.partBytes === undefined ? limits.requestBytes : limits.partedBytes;
  if (size > max) {
    throw new RelayError("write_too_large", `this transaction's changeset is ${size} bytes; the relay accepts at most ${max}: nothing was written`);
  }
  let largest = 0;
  scan(changeset, {
    table() {},
    change(s) {
      largest = Math.max(largest, s.changeEnd - s.changeStart);
    },
  });
  if (largest > limits.requestBytes) {
    throw new RelayError("write_too_large", `one row's change in this transaction is ${largest} bytes; the relay accepts at most ${limits.requestBytes} per row: nothing was written`);
  }
}

/**
 * Parts in flight at once, up and down: the next one is read (or applied)
 * and compressed while the relay takes the previous one, and at most this
 * many parts are in memory.
 */
export const PARTS_IN_FLIGHT = 2;

/**
 * Upload entry `cseq` (`size` bytes) in parts, reading each part from the
 * outbox as it goes (`read`), so only PARTS_IN_FLIGHT parts are in memory.
 * Each request is retried on its own (`retry`); a part sent twice is the same
 * part to the relay, and parts may arrive in any order (the relay validates
 * them as they line up and appends when it has them all). Each names the part
 * size (`part`), which the relay keeps for this upload even if reconfigured.
 * Resolves with the entry's ack, which comes with the part that completed it,
 * or earlier when the log had it already (a lost answer).
 */
export async function pushInParts(
  entry: { cseq: number; v: number; size: number },
  partBytes: number,
  read: (from: number, length: number) => Promise<Uint8Array>,
  send: (part: EntryPart) => Promise<PushResponse>,
  retry: <T>(fn: () => Promise<T>) => Promise<T>,
): Promise<PushResponse> {
  const parts = Math.ceil(entry.size / partBytes);
  // Twice at most: a relay that cleared an abandoned upload meanwhile answers its last part without an ack.
  const acked = (res: PushResponse) => res.acks.some((a) => a.cseq === entry.cseq);
  for (let attempt = 0; attempt < 2; attempt++) {
    const flying: Promise<PushResponse>[] = [];
    let done: PushResponse | undefined;
    const settle = async () => {
      const res = await flying.shift()!;
      if (acked(res)) done ??= res;
    };
    for (let idx = 0; idx < parts && !done; idx++) {
      const data = await read(idx * partBytes, Math.min(partBytes, entry.size - idx * partBytes));
      const sent = retry(() => send({ cseq: entry.cseq, v: entry.v, size: entry.size, idx, data, part: partBytes }));
      // Observed at once: it may fail while the next part is read (unhandled, that ends a Node process); settle() throws it.
      sent.catch(() => undefined);
      flying.push(sent);
      if (flying.length >= PARTS_IN_FLIGHT) await settle();
    }
    while (flying.length > 0) await settle();
    if (done) return done;
  }
  throw new RelayError("internal", `the relay took every part of cseq ${entry.cseq} without appending it`);
}

/**
 * Whether a pulled page holds an entry larger than a part (fetched in parts;
 * undefined: the relay takes no parts and sends every entry whole). The sync
 * loop asks for the next page only once such a page applied, so a client
 * holds one large entry at a time.
 */
export function holdsLarge(entries: readonly LogEntry[], partBytes: number | undefined): boolean {
  return partBytes !== undefined && entries.some((e) => e.changeset.byteLength > partBytes);
}
