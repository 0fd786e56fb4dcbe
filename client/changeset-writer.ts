/**
 * The client's side of the changeset codec: encodeChangeset (decode's inverse,
 * for building changesets from values) and invertChangeset (undo, for rebase).
 * The relay never writes changesets, so this lives with the client; both run
 * the one reader in protocol/changeset.ts, so anything written here is checked
 * by exactly the rules the relay applies.
 */
import { RelayError } from "./errors.ts";
import {
  looksInteger,
  OP_DELETE,
  OP_INSERT,
  OP_UPDATE,
  scan,
  T_BLOB,
  T_INTEGER,
  T_NULL,
  T_REAL,
  T_TEXT,
  T_UNDEFINED,
  TABLE,
  type Change,
  type Changeset,
  type TableHeader,
} from "../protocol/changeset.ts";

const utf8Encoder = new TextEncoder();

/** A growable output buffer. */
class Writer {
  buf = new Uint8Array(1024);
  view = new DataView(this.buf.buffer);
  len = 0;

  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  byte(b: number): void {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  varint(v: number): void {
    // SQLite's minimal big-endian varint; values here are below 2^31.
    this.reserve(5);
    let n = 1;
    while (n < 5 && v >= 2 ** (7 * n)) n++;
    for (let i = n - 1; i >= 0; i--) {
      const group = Math.floor(v / 2 ** (7 * i)) & 0x7f;
      this.buf[this.len++] = i > 0 ? group | 0x80 : group;
    }
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
}

function encodeFailure(what: string): never {
  throw new RelayError("malformed_changeset", `encodeChangeset: ${what}`);
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** Names the value being written, for error messages; built only on failure. */
interface Where {
  index: number;
  change: Change;
  record: "old" | "new";
}

function describe(at: Where, column?: number): string {
  const c = at.change;
  return `change ${at.index} (${c.op} on ${JSON.stringify(c.table.name)}) ${at.record}` + (column === undefined ? "" : ` column ${column}`);
}

/** Strings up to this many UTF-16 units encode to at most 127 bytes: a one-byte varint. */
const SHORT_TEXT = 42;

function writeValue(w: Writer, v: unknown, asReal: boolean, at: Where, column: number): void {
  if (v === undefined) {
    w.byte(T_UNDEFINED);
  } else if (v === null) {
    w.byte(T_NULL);
  } else if (typeof v === "number") {
    w.reserve(9);
    if (looksInteger(v) && !asReal) {
      w.buf[w.len++] = T_INTEGER;
      const hi = Math.floor(v / 4294967296);
      w.view.setInt32(w.len, hi);
      w.view.setUint32(w.len + 4, v - hi * 4294967296);
    } else {
      if (Number.isNaN(v)) encodeFailure(`${describe(at, column)}: NaN cannot be stored`);
      w.buf[w.len++] = T_REAL;
      w.view.setFloat64(w.len, v);
    }
    w.len += 8;
  } else if (typeof v === "bigint") {
    if (v < INT64_MIN || v > INT64_MAX) encodeFailure(`${describe(at, column)}: ${v} does not fit in a 64-bit INTEGER`);
    w.reserve(9);
    w.buf[w.len++] = T_INTEGER;
    w.view.setBigInt64(w.len, v);
    w.len += 8;
  } else if (typeof v === "string") {
    if (v.length <= SHORT_TEXT) {
      // Encode in place: no temporary array for the common short string.
      w.reserve(2 + 3 * v.length);
      w.buf[w.len] = T_TEXT;
      const { written } = utf8Encoder.encodeInto(v, w.buf.subarray(w.len + 2));
      w.buf[w.len + 1] = written;
      w.len += 2 + written;
    } else {
      const bytes = utf8Encoder.encode(v);
      w.byte(T_TEXT);
      w.varint(bytes.length);
      w.bytes(bytes);
    }
  } else if (v instanceof Uint8Array) {
    w.byte(T_BLOB);
    w.varint(v.length);
    w.bytes(v);
  } else {
    encodeFailure(`${describe(at, column)}: unsupported value of type ${typeof v}`);
  }
}

function writeRecord(w: Writer, values: unknown, nCol: number, reals: readonly number[] | undefined, at: Where): void {
  if (!Array.isArray(values) || values.length !== nCol) {
    encodeFailure(`${describe(at)}: expected an array of ${nCol} values`);
  }
  for (let i = 0; i < nCol; i++) {
    writeValue(w, values[i], reals !== undefined && reals.length > 0 && reals.includes(i), at, i);
  }
}

function pkBytes(t: TableHeader): Uint8Array {
  const raw = t.pkRaw;
  if (raw !== undefined) {
    if (raw.length !== t.pk.length || t.pk.some((isPk, i) => isPk !== (raw[i] !== 0))) {
      encodeFailure(`table ${JSON.stringify(t.name)}: pkRaw disagrees with pk`);
    }
    return raw;
  }
  const out = new Uint8Array(t.pk.length);
  let k = 0;
  t.pk.forEach((isPk, i) => {
    if (isPk) out[i] = ++k;
  });
  return out;
}

function writeHeader(w: Writer, t: TableHeader): void {
  // The NUL would end the name early and the rest would be read as changes.
  if (t.name.includes("\0")) encodeFailure(`table name ${JSON.stringify(t.name)} contains NUL`);
  w.byte(TABLE);
  w.varint(t.pk.length);
  w.bytes(pkBytes(t));
  w.bytes(utf8Encoder.encode(t.name));
  w.byte(0);
}

function sameHeader(a: TableHeader, b: TableHeader): boolean {
  if (a.name !== b.name || a.pk.length !== b.pk.length) return false;
  const pa = pkBytes(a);
  const pb = pkBytes(b);
  return pa.every((f, i) => f === pb[i]);
}

/**
 * Encode to SQLite's changeset format; byte-identical to the input of
 * decodeChangeset for every changeset it accepts whose TEXT values are valid
 * UTF-8. `cs.tables` is read as the sequence of table blocks, which keeps
 * blocks without changes and repeated blocks of one table where they were;
 * a change whose table is not next in that sequence gets a header of its own
 * unless the previous change's header is equal. The output is validated:
 * changes that break a rule throw RelayError("malformed_changeset").
 * No tables and no changes encode to the empty changeset (which SQLite
 * produces for a session without changes, and which validateChangeset refuses).
 */
export function encodeChangeset(cs: Changeset): Uint8Array {
  if (cs.tables.length === 0 && cs.changes.length === 0) return new Uint8Array(0);
  const w = new Writer();
  let current: TableHeader | undefined;
  let nextTable = 0;
  const changes = cs.changes;
  for (let index = 0; index < changes.length; index++) {
    const c = changes[index]!;
    const t = c.table;
    if (t !== current) {
      let j = nextTable;
      while (j < cs.tables.length && cs.tables[j] !== t) j++;
      if (j < cs.tables.length) {
        for (; nextTable <= j; nextTable++) writeHeader(w, cs.tables[nextTable]!);
        current = t;
      } else if (current === undefined || !sameHeader(current, t)) {
        writeHeader(w, t);
        current = t;
      }
    }
    const nCol = t.pk.length;
    switch (c.op) {
      case "insert":
        w.byte(OP_INSERT);
        break;
      case "update":
        w.byte(OP_UPDATE);
        break;
      case "delete":
        w.byte(OP_DELETE);
        break;
      default:
        encodeFailure(`change ${index}: unknown op ${JSON.stringify(c.op)}`);
    }
    w.byte(c.indirect ? 1 : 0);
    if (c.op !== "insert") writeRecord(w, c.old, nCol, c.integralReals?.old, { index, change: c, record: "old" });
    if (c.op !== "delete") writeRecord(w, c.new, nCol, c.integralReals?.new, { index, change: c, record: "new" });
  }
  for (; nextTable < cs.tables.length; nextTable++) writeHeader(w, cs.tables[nextTable]!);
  const out = w.buf.slice(0, w.len);
  try {
    scan(out, undefined);
  } catch (e) {
    if (e instanceof RelayError) encodeFailure(`the changes do not form a valid changeset: ${e.message}`);
    throw e;
  }
  return out;
}

/**
 * Invert like sqlite3changeset_invert, byte for byte: INSERT and DELETE swap
 * and keep their record; an UPDATE's old record becomes the PK values plus the
 * new values, its new record the old values of the changed columns. Works on
 * raw byte ranges, so TEXT that is not valid UTF-8 survives unchanged. A new
 * value on a PK column (see checkUpdate) is dropped, as SQLite drops it.
 * Throws RelayError("malformed_changeset") on what validateChangeset refuses.
 */
export function invertChangeset(bytes: Uint8Array): Uint8Array {
  // Each inverted piece is at most as long as the original.
  const out = new Uint8Array(bytes.length);
  let len = 0;
  const copy = (from: number, to: number): void => {
    out.set(bytes.subarray(from, to), len);
    len += to - from;
  };
  scan(bytes, {
    table(s) {
      copy(s.tableStart, s.tableEnd);
    },
    change(s) {
      const { buf, op, oldAt, newAt, nCol, pkAt } = s;
      if (op !== OP_UPDATE) {
        out[len++] = op === OP_INSERT ? OP_DELETE : OP_INSERT;
        out[len++] = buf[s.changeStart + 1]!;
        copy(s.changeStart + 2, s.changeEnd);
        return;
      }
      out[len++] = OP_UPDATE;
      out[len++] = buf[s.changeStart + 1]!;
      for (let i = 0; i < nCol; i++) {
        const at = buf[pkAt + i] !== 0 ? oldAt : newAt;
        copy(at[i]!, at[i + 1]!);
      }
      for (let i = 0; i < nCol; i++) {
        if (buf[pkAt + i] !== 0) out[len++] = T_UNDEFINED;
        else copy(oldAt[i]!, oldAt[i + 1]!);
      }
    },
  });
  return len === out.length ? out : out.slice(0, len);
}
