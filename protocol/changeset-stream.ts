import { changesetTables, OP_DELETE, OP_INSERT, OP_UPDATE, T_BLOB, T_INTEGER, T_NULL, T_REAL, T_TEXT, T_UNDEFINED, TABLE, type TableHeader } from "./changeset.ts";
import { RelayError } from "./errors.ts";
import { MAX_COLUMNS } from "./limits.ts";

/**
 * validateChangeset over a changeset that arrives in pieces (a parted entry,
 * read back chunk by chunk), holding at most one piece and the change that
 * crosses into the next one, never the whole. Each piece is cut after its
 * last complete item (a table header or a change; a change may span any
 * number of pieces), and the complete items are validated by the one parser
 * (changeset.ts), preceded by the table header they belong to, so every rule
 * holds exactly as for the whole. What is cut off waits for the next piece,
 * up to `maxPending` bytes: a single change larger than that is refused
 * (`payload_too_large`), so a hostile upload cannot make the relay hold it.
 * The cut only measures items (it checks nothing); malformed bytes are left
 * for the parser, which refuses them.
 */
export class ChangesetStream {
  /** The current table block's header bytes, put before the changes of the next piece. */
  private header: Uint8Array | undefined;
  /** Its column count (0: no header yet: the changeset must begin with one). */
  private nCol = 0;
  private pending: Uint8Array = new Uint8Array(0);
  private started = false;
  /** Every distinct table header of the whole changeset (by bytes), for the schema check. */
  readonly tables: TableHeader[] = [];
  private readonly seen = new Set<string>();
  private readonly maxPending: number;

  constructor(maxPending: number) {
    this.maxPending = maxPending;
  }

  push(piece: Uint8Array): void {
    const buf = this.pending.byteLength === 0 ? piece : concat(this.pending, piece);
    // The changes at the start of `buf` belong to the header before it; later ones to the headers in it.
    const before = this.header;
    const end = completeItems(buf, this.nCol, (start, stop, nCol) => {
      this.header = buf.slice(start, stop);
      this.nCol = nCol;
    });
    if (end > 0) this.check(buf.subarray(0, end), before);
    this.pending = buf.slice(end);
    if (this.pending.byteLength > this.maxPending) {
      throw new RelayError("payload_too_large", `a single change of this entry is larger than ${this.maxPending} bytes`);
    }
  }

  /** The changeset is complete: what is still pending is a truncated item (refused by the parser). */
  end(): void {
    if (this.pending.byteLength > 0 || !this.started) this.check(this.pending, this.header);
  }

  private check(items: Uint8Array, header: Uint8Array | undefined): void {
    // The first piece starts with its own header (or is refused for not doing so).
    const whole = items[0] === TABLE || !header ? items : concat(header, items);
    this.started = true;
    for (const t of changesetTables(whole)) {
      const key = `${t.name}\0${t.pkRaw?.join(",")}`;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      this.tables.push(t);
    }
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}

/**
 * The offset after the last complete item of `buf` (0: none), calling
 * `header` with the bounds and column count of each complete table header.
 * `nCol`: the column count of the header the changes at the start of `buf`
 * belong to (0: none, `buf` must begin with a header). Anything that is not
 * a well-formed item's start counts as complete up to the end of `buf`, so
 * the parser sees it and refuses it.
 */
function completeItems(buf: Uint8Array, nCol: number, header: (start: number, end: number, nCol: number) => void): number {
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
      header(at, pos, nCol);
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
