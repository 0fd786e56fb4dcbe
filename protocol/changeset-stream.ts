import { changesetTables, scan, validateChangeset, type Scan, OP_DELETE, OP_INSERT, OP_UPDATE, T_BLOB, T_INTEGER, T_NULL, T_REAL, T_TEXT, T_UNDEFINED, TABLE, type TableHeader } from "./changeset.ts";
import { RelayError } from "./errors.ts";
import { MAX_COLUMNS } from "./limits.ts";

/**
 * validateChangeset over a changeset that arrives in pieces (a parted entry,
 * read back chunk by chunk), holding at most one piece and the change that
 * crosses into the next one, never the whole. Each piece goes through the one
 * parser (changeset.ts), after the table header its first changes belong to
 * (the parser accepts a header followed by another), so every rule holds
 * exactly as for the whole. Where the parser stops, completeItems measures
 * the item: cut off by the piece's end, it waits for the next piece (a change
 * may span any number of them), up to `maxPending` bytes: a single change
 * larger than that is refused (`payload_too_large`), so a hostile upload
 * cannot make the relay hold it; whole, it is refused as malformed.
 */
export class ChangesetStream {
  /** The current table block's header bytes, put before the next piece. */
  private header: Uint8Array = NO_BYTES;
  /** Its column count (0: no header yet: the changeset must begin with one). */
  private nCol = 0;
  private pending: Uint8Array = NO_BYTES;
  private started = false;
  /** Every distinct table header since the start (or the resumed header: not repeated), by bytes, for the schema check. */
  readonly tables: TableHeader[] = [];
  private readonly seen = new Set<string>();
  private readonly maxPending: number;

  /**
   * `header`: resume a stream stopped at an item boundary (a parted entry
   * validated over several requests: worker/entry-parts.ts), where this
   * table header was in force (its `header` then); none: the changeset's start.
   */
  constructor(maxPending: number, header: Uint8Array = NO_BYTES) {
    this.maxPending = maxPending;
    if (header.byteLength === 0) return;
    this.header = header;
    this.nCol = changesetTables(header)[0]!.pk.length;
    this.started = true;
  }

  /** The table header in force where the complete items end (resume from there with it). */
  get tableHeader(): Uint8Array {
    return this.header;
  }

  /** Bytes held after the last complete item (an item cut off by the end of what was pushed). */
  get held(): number {
    return this.pending.byteLength;
  }

  push(piece: Uint8Array): void {
    const head = this.header.byteLength;
    const buf = new Uint8Array(head + this.pending.byteLength + piece.byteLength);
    buf.set(this.header);
    buf.set(this.pending, head);
    buf.set(piece, head + this.pending.byteLength);
    this.pending = buf.subarray(this.check(buf, head)).slice();
    if (this.pending.byteLength > this.maxPending) {
      throw new RelayError("payload_too_large", `a single change of this entry is larger than ${this.maxPending} bytes`);
    }
  }

  /** The changeset is complete: what is still pending is an item cut off for good. */
  end(): void {
    if (this.pending.byteLength === 0 && this.started) return;
    const buf = new Uint8Array(this.header.byteLength + this.pending.byteLength);
    buf.set(this.header);
    buf.set(this.pending, this.header.byteLength);
    validateChangeset(buf); // refuses it, or an empty changeset
  }

  /** Parse `buf` (the header, then `head` on: new bytes); returns where its complete items end. */
  private check(buf: Uint8Array, head: number): number {
    let end = head;
    const seen = (s: Scan) => {
      if (s.tableStart < head) return; // the header put before
      this.header = buf.slice(s.tableStart, s.tableEnd);
      this.nCol = s.nCol;
      end = s.tableEnd;
      const key = this.header.join();
      if (this.seen.has(key)) return;
      this.seen.add(key);
      this.tables.push(changesetTables(this.header)[0]!);
    };
    try {
      scan(buf, { table: seen, change: (s) => void (end = s.changeEnd) });
      end = buf.byteLength;
    } catch (e) {
      // Cut off by the end of the piece (nothing of it is complete), or malformed.
      if (completeItems(buf.subarray(end), this.nCol) > 0) throw e;
    }
    this.started ||= end > 0;
    return end;
  }
}

const NO_BYTES = new Uint8Array(0);

/**
 * The offset after the last complete item of `buf` (0: none). `nCol`: the
 * column count of the header the changes at the start of `buf` belong to (0:
 * none, `buf` must begin with a header). It only measures: anything that is
 * not a well-formed item's start counts as complete up to the end of `buf`.
 */
function completeItems(buf: Uint8Array, nCol: number): number {
  const len = buf.length;
  let pos = 0;
  for (;;) {
    if (pos >= len) return pos;
    const at = pos;
    const op = buf[pos]!;
    if (op === TABLE) {
      const n = varint(buf, pos + 1);
      if (n === undefined) return at;
      if (n.value <= 0 || n.value > MAX_COLUMNS) return len;
      const name = buf.indexOf(0, n.end + n.value);
      if (name < 0) return at;
      nCol = n.value;
      pos = name + 1;
      continue;
    }
    if ((op !== OP_INSERT && op !== OP_UPDATE && op !== OP_DELETE) || nCol === 0) return len;
    pos += 2;
    for (let v = (op === OP_UPDATE ? 2 : 1) * nCol; v > 0; v--) {
      if (pos >= len) return at;
      const type = buf[pos++]!;
      if (type === T_INTEGER || type === T_REAL) pos += 8;
      else if (type === T_TEXT || type === T_BLOB) {
        const n = varint(buf, pos);
        if (n === undefined) return at;
        if (n.value < 0) return len;
        pos = n.end + n.value;
      } else if (type !== T_NULL && type !== T_UNDEFINED) return len;
    }
    if (pos > len) return at;
  }
}

/** A varint of at most 5 bytes at `pos` (undefined: it runs past the end; value -1: longer, the parser's to refuse). */
function varint(buf: Uint8Array, pos: number): { value: number; end: number } | undefined {
  let value = 0;
  for (let i = pos; i < pos + 5; i++) {
    if (i >= buf.length) return undefined;
    const b = buf[i]!;
    value = value * 128 + (b & 0x7f);
    if (b < 0x80) return { value, end: i + 1 };
  }
  return { value: -1, end: pos + 5 };
}
