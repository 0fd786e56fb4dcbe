import type { PushEntry } from "../protocol/messages.ts";
import type { Driver } from "./drivers/types.ts";
import { RelayError } from "./errors.ts";
import { sameBytes } from "../protocol/codec.ts";

/**
 * The outbox: local transactions not yet confirmed by the log, in capture
 * order (cseq). Every statement over `_relay_outbox` is here, and so is the
 * one rule that cuts pending entries into push requests and live frames
 * (batchByBytes).
 */
export function createOutbox(d: Driver): void {
  d.exec(`CREATE TABLE IF NOT EXISTS ${OUTBOX_TABLE("_relay_outbox")}`);
  // Databases from before schema versions.
  if (!d.all("SELECT 1 FROM pragma_table_info('_relay_outbox') WHERE name = 'v'").length) d.exec("ALTER TABLE _relay_outbox ADD COLUMN v INTEGER NOT NULL DEFAULT 0");
  // Databases from before one copy: \`applied\` was NOT NULL, a second copy of
  // every fresh entry. SQLite cannot drop a NOT NULL, so the table is rebuilt
  // once (inside open's transaction), copies equal to \`changeset\` becoming NULL.
  if (d.all("SELECT 1 FROM pragma_table_info('_relay_outbox') WHERE name = 'applied' AND \"notnull\" = 1").length) {
    d.exec(`
      CREATE TABLE ${OUTBOX_TABLE("_relay_outbox_one_copy")};
      INSERT INTO _relay_outbox_one_copy(cseq, changeset, applied, sent, v)
        SELECT cseq, changeset, CASE WHEN applied = changeset THEN NULL ELSE applied END, sent, v FROM _relay_outbox;
      DROP TABLE _relay_outbox;
      ALTER TABLE _relay_outbox_one_copy RENAME TO _relay_outbox;
    `);
  }
}

const OUTBOX_TABLE = (name: string) => `${name}(
    cseq INTEGER PRIMARY KEY,
    changeset BLOB NOT NULL,  -- what is (or will be) pushed; never changes once sent
    -- What the local view holds of it, undone by its inverse; NULL while that
    -- is \`changeset\` itself (always, until a rebase changes it): a large
    -- entry is stored once, and "unchanged" is known without comparing BLOBs.
    applied BLOB,
    sent INTEGER NOT NULL DEFAULT 0,
    v INTEGER NOT NULL DEFAULT 0  -- the schema version \`changeset\` was captured under (\`applied\` is always the local one's)
  );`;

export interface OutboxRow {
  cseq: number;
  changeset: Uint8Array;
  /** The same array as `changeset` while the row stores no copy of its own. */
  applied: Uint8Array;
  sent: boolean;
  v: number;
}

/** The oldest `limit` pending entries (all of them by default), as a rebase needs them. */
export function pending(d: Driver, limit = -1): OutboxRow[] {
  return d.all("SELECT cseq, changeset, applied, sent, v FROM _relay_outbox ORDER BY cseq LIMIT ?", [limit]).map((r) => ({
    cseq: r.cseq as number,
    changeset: r.changeset as Uint8Array,
    applied: (r.applied ?? r.changeset) as Uint8Array,
    sent: r.sent === 1,
    v: r.v as number,
  }));
}

/** The highest cseq queued, 0 when the outbox is empty. */
export function lastCseq(d: Driver): number {
  return Number(d.all("SELECT max(cseq) AS m FROM _relay_outbox")[0]?.m ?? 0);
}

export function pendingCount(d: Driver): number {
  return d.all("SELECT count(*) AS n FROM _relay_outbox")[0]!.n as number;
}

/**
 * A pending entry as sent. `size` is set (and `changeset` empty) for one
 * larger than the caller holds at once: it goes in parts, read with slice().
 */
export type OutboxEntry = PushEntry & { size?: number };

/** An entry's changeset size, whether held or not. */
export const sizeOf = (e: OutboxEntry): number => e.size ?? e.changeset.byteLength;

/**
 * Up to `limit` entries to send, in cseq order, from the one after `cseq`;
 * the changeset of one larger than `inlineMax` is left in the database
 * (`size` says how large).
 */
export function entriesAfter(d: Driver, cseq: number, limit: number, inlineMax = Infinity): OutboxEntry[] {
  if (inlineMax === Infinity) return d.all("SELECT cseq, changeset, v FROM _relay_outbox WHERE cseq > ? ORDER BY cseq LIMIT ?", [cseq, limit]).map(pushEntry);
  return d.all("SELECT cseq, v, length(changeset) AS size, CASE WHEN length(changeset) <= ? THEN changeset END AS changeset FROM _relay_outbox WHERE cseq > ? ORDER BY cseq LIMIT ?", [inlineMax, cseq, limit])
    .map((r) => (r.changeset === null ? { cseq: r.cseq as number, v: r.v as number, changeset: new Uint8Array(0), size: r.size as number } : pushEntry(r)));
}

/**
 * Reads the parts of a pending entry larger than one request, in order.
 * SQLite loads a whole BLOB to take a substr() of it (node:sqlite has no
 * incremental BLOB I/O), so reading each part with substr() loaded the whole
 * entry once per part (8 loads of 61 MB, ~56 ms each, at 1,000,000 rows): the
 * entry is read once when its first part is asked for, and dropped after its
 * last (or when the sync ends). A sent entry's bytes never change, and every
 * pass starts at part 0, read afresh.
 */
export class PartReader {
  private held: { cseq: number; bytes: Uint8Array } | undefined;

  /** Bytes `from..from+length` of pending entry `cseq`'s changeset. */
  read(d: Driver, cseq: number, from: number, length: number): Uint8Array {
    if (from === 0 || this.held?.cseq !== cseq) {
      this.held = undefined; // the previous entry's bytes go before this one's come
      const bytes = d.all("SELECT changeset FROM _relay_outbox WHERE cseq = ?", [cseq])[0]?.changeset;
      if (bytes instanceof Uint8Array) this.held = { cseq, bytes };
    }
    const bytes = this.held?.bytes;
    if (!bytes || from + length > bytes.byteLength) throw new RelayError("internal", `pending entry ${cseq} has no bytes ${from}..${from + length}`);
    if (from + length === bytes.byteLength) this.held = undefined;
    return bytes.subarray(from, from + length);
  }

  /** Forget the entry held (a pass that ended before its last part). */
  drop(): void {
    this.held = undefined;
  }
}

/** Pending entries `from..upTo` as pushed, by cseq (acknowledged ones, applied from here). */
export function changesets(d: Driver, from: number, upTo: number): Map<number, PushEntry> {
  const rows = d.all("SELECT cseq, changeset, v FROM _relay_outbox WHERE cseq >= ? AND cseq <= ?", [from, upTo]);
  return new Map(rows.map((r) => [r.cseq as number, pushEntry(r)]));
}

/** `sent`: the caller sends it as soon as this transaction commits. */
export function enqueue(d: Driver, entry: PushEntry, sent = false): void {
  d.run("INSERT INTO _relay_outbox(cseq, changeset, sent, v) VALUES (?, ?, ?, ?)", [entry.cseq, entry.changeset, sent ? 1 : 0, entry.v ?? 0]);
}

/**
 * Whether `cseqs` are the oldest pending entries, in order, each captured
 * under `version` and holding locally exactly what it ships: then the log
 * taking them changes nothing here (rebase.ts's confirmedPrefix), decided in
 * SQL, without reading the changesets into memory.
 */
export function unchangedHead(d: Driver, cseqs: readonly number[], version: number): boolean {
  const rows = d.all("SELECT cseq, v, applied IS NULL AS same FROM _relay_outbox ORDER BY cseq LIMIT ?", [cseqs.length]);
  return rows.length === cseqs.length && rows.every((r, i) => r.cseq === cseqs[i] && r.v === version && r.same === 1);
}

/**
 * Entries `from..upTo` are being sent. Batches go out in cseq order, so the
 * rows below `from` are marked already; bounding the range keeps this from
 * scanning the whole backlog of a writer that outpaces its acks.
 */
export function markSent(d: Driver, from: number, upTo: number): void {
  d.run("UPDATE _relay_outbox SET sent = 1 WHERE cseq >= ? AND cseq <= ? AND sent = 0", [from, upTo]);
}

export function dequeue(d: Driver, cseq: number): void {
  d.run("DELETE FROM _relay_outbox WHERE cseq = ?", [cseq]);
}

/**
 * After a rebase: what the local view now holds of a pending entry. With
 * `version` (its bytes are not fixed: never sent, or never to be taken, see
 * rebase.redo), the entry ships that instead, captured under `version`, and
 * is sent again.
 */
export function recapture(d: Driver, row: OutboxRow, applied: Uint8Array, version: number | undefined): void {
  if (version === undefined) {
    const same = sameBytes(applied, row.changeset);
    // Still what it ships, and stored as such: nothing to write.
    if (same && row.applied === row.changeset) return;
    d.run("UPDATE _relay_outbox SET applied = ? WHERE cseq = ?", [same ? null : applied, row.cseq]);
  } else if (applied.byteLength === 0) dequeue(d, row.cseq);
  else d.run("UPDATE _relay_outbox SET changeset = ?, applied = NULL, v = ?, sent = 0 WHERE cseq = ?", [applied, version, row.cseq]);
}

/**
 * The leading entries whose changesets fit in `budget` bytes together: one
 * push request or one live frame. Never empty when `entries` is not: an entry
 * larger than the budget goes alone (the caller decides whether it may).
 */
export function batchByBytes<E extends OutboxEntry>(entries: readonly E[], budget: number): E[] {
  let bytes = 0;
  let n = 0;
  for (const e of entries) {
    // An entry left in the database goes alone.
    if (n > 0 && (bytes + sizeOf(e) > budget || e.size !== undefined)) break;
    bytes += sizeOf(e);
    n++;
    if (e.size !== undefined) break;
  }
  return entries.slice(0, n);
}

/**
 * The next push request: entries after cseq `after` within `budget` bytes,
 * all captured under one schema version (the push carries the versions
 * they need before them), marked sent before they go: a sent entry's bytes
 * are fixed, because the relay may have stored them even if we never hear back.
 * One larger than `partedAbove` comes alone, by size: it goes up in parts.
 */
export function takeForPush(d: Driver, after: number, limit: number, budget: number, partedAbove = Infinity): OutboxEntry[] {
  const entries = entriesAfter(d, after, limit, partedAbove);
  const other = entries.findIndex((e) => e.v !== entries[0]!.v);
  const batch = batchByBytes(other < 0 ? entries : entries.slice(0, other), budget);
  if (batch.length > 0) markSent(d, batch[0]!.cseq, batch.at(-1)!.cseq);
  return batch;
}

function pushEntry(r: Record<string, unknown>): PushEntry {
  return { cseq: r.cseq as number, changeset: r.changeset as Uint8Array, v: r.v as number };
}
