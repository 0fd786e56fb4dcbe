/**
 * SQLite session-extension changesets, in TypeScript.
 *
 * The relay cannot run SQLite (workerd forbids the runtime Wasm code generation
 * sqlite-wasm needs), yet it must refuse anything that would break replay on a
 * replica. So one scanner holds every rule; validateChangeset, decodeChangeset
 * and the client's invertChangeset (client/changeset-writer.ts) all run it and
 * differ only in what they do with each table header and change once it has
 * been checked. This file is the reader both sides share; the writer is the
 * client's.
 *
 * Format (sqlite3session.c, "CHANGESET FORMAT"): a sequence of table blocks,
 * each 'T', varint nCol, nCol PK-flag bytes, NUL-terminated name, then changes:
 * op byte, indirect byte, then the old record (UPDATE, DELETE) and the new
 * record (INSERT, UPDATE). A record is nCol values, each a type byte followed by
 * 8 big-endian bytes (INTEGER, REAL), a varint length and bytes (TEXT, BLOB) or
 * nothing (0 = undefined, 5 = NULL).
 *
 * Rules where we are deliberately stricter than SQLite's own iterator
 * (sqlite3changeset_next, checked against SQLite 3.54.1) are marked STRICTER
 * where they are enforced; test/decoder-fuzz.test.ts names each one and
 * checks that nothing else separates the two. The common reason: the session module never writes
 * such bytes, and the iterator's leniency turns them into silent data loss,
 * divergence between replicas, or an apply that fails on every replica.
 */
import { RelayError } from "./errors.ts";
import { MAX_COLUMNS } from "./limits.ts";

export type SqlValue = null | number | bigint | string | Uint8Array;
export type ChangeOp = "insert" | "update" | "delete";

export interface TableHeader {
  name: string;
  /** pk.length = column count; pk[i] is true if column i is part of the primary key. */
  pk: boolean[];
  /**
   * The PK flag bytes exactly as SQLite writes them: for a PK column its
   * 1-based position within the PRIMARY KEY clause, 0 otherwise (so
   * `PRIMARY KEY(c, a)` over columns (a, b, c) is [2, 0, 1]). Set by
   * decodeChangeset. sqlite3changeset_apply compares these bytes with the
   * target table and silently skips the whole table on a mismatch, so when
   * building a header by hand for a table whose PK order differs from its
   * column order, set this; without it encodeChangeset numbers PK columns in
   * column order.
   */
  pkRaw?: Uint8Array;
}

export interface Change {
  /** The header object this change belongs to (shared by the changes of one table block). */
  table: TableHeader;
  op: ChangeOp;
  indirect: boolean;
  /** delete: all columns; update: PK columns + changed columns, `undefined` for the rest; insert: undefined */
  old: (SqlValue | undefined)[] | undefined;
  /** insert: all columns; update: changed columns, `undefined` elsewhere; delete: undefined */
  new: (SqlValue | undefined)[] | undefined;
  /**
   * Columns whose value is a REAL with an integral value such as 1.0, which a
   * JS number cannot tell apart from an INTEGER. Set by decodeChangeset only
   * when there are any; encodeChangeset writes these columns as REAL so that
   * decode→encode stays byte-identical.
   */
  integralReals?: { old: number[]; new: number[] };
}

export interface Changeset {
  tables: TableHeader[];
  changes: Change[];
}

/** Format bytes, exported for the client's writer (client/changeset-writer.ts). */
export const TABLE = 0x54; // 'T'
const PATCHSET_TABLE = 0x50; // 'P'
export const OP_INSERT = 0x12;
export const OP_UPDATE = 0x17;
export const OP_DELETE = 0x09;

export const T_UNDEFINED = 0;
export const T_INTEGER = 1;
export const T_REAL = 2;
export const T_TEXT = 3;
export const T_BLOB = 4;
export const T_NULL = 5;

const MAX_VARINT = 0x7fffffff;

function malformed(offset: number, what: string): never {
  throw new RelayError("malformed_changeset", `malformed changeset: ${what} (byte ${offset})`);
}

function hex(b: number): string {
  return "0x" + b.toString(16).padStart(2, "0");
}

/**
 * The position after the last varint read by readVarint. A module-level slot
 * instead of a returned pair keeps the hot loop free of allocations; nothing
 * here is re-entrant.
 */
let varintEnd = 0;

/**
 * Lengths and column counts. STRICTER: SQLite reads any 1–9 byte varint and
 * keeps only its low 31 bits, so a column count written as 2^31+1 is read as
 * 1, and it accepts non-minimal encodings. We refuse both: SQLite only ever
 * writes minimal varints below 2^31 (at most 5 bytes), and with canonical
 * varints decode→encode and our byte-level invert stay byte-identical.
 */
function readVarint(buf: Uint8Array, pos: number, what: string): number {
  const len = buf.length;
  if (pos >= len) malformed(pos, `${what}: input ends before its varint`);
  const first = buf[pos]!;
  if (first < 0x80) {
    varintEnd = pos + 1;
    return first;
  }
  if (first === 0x80) malformed(pos, `${what}: non-minimal varint`);
  let v = first & 0x7f;
  for (let i = pos + 1; i < pos + 5; i++) {
    if (i >= len) malformed(pos, `${what}: varint runs past the end of the input`);
    const b = buf[i]!;
    v = v * 128 + (b & 0x7f);
    if (b < 0x80) {
      if (v > MAX_VARINT) malformed(pos, `${what}: varint value ${v} is above 2^31-1`);
      varintEnd = i + 1;
      return v;
    }
  }
  return malformed(pos, `${what}: varint longer than 5 bytes (value above 2^31-1)`);
}

/** ASCII-only case folding, like SQLite's own identifier comparison. */
function startsWithCI(buf: Uint8Array, at: number, end: number, prefix: string): boolean {
  if (end - at < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    let b = buf[at + i]!;
    if (b >= 0x41 && b <= 0x5a) b += 0x20;
    if (b !== prefix.charCodeAt(i)) return false;
  }
  return true;
}

// ignoreBOM: a leading U+FEFF is part of the value; the default strips it.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** Parser state handed to the visitors; valid only during the callback. */
export interface Scan {
  readonly buf: Uint8Array;
  /** Current table block: offsets of its 'T' byte and of the byte after the name's NUL. */
  tableStart: number;
  tableEnd: number;
  nCol: number;
  /** Offset of the first PK flag byte. */
  pkAt: number;
  name: string;
  /** Current change: offsets of its op byte and of the byte after its last record. */
  changeStart: number;
  changeEnd: number;
  op: number;
  /**
   * Start offsets (the type byte) of each value of the old/new record, plus
   * one entry for the record's end, so value i spans at[i]..at[i+1].
   */
  oldAt: Int32Array;
  newAt: Int32Array;
}

export interface Visitor {
  table(s: Scan): void;
  change(s: Scan): void;
}

/**
 * Reads one record of s.nCol values starting at pos into `at`, and returns
 * the offset after it.
 */
function readRecord(s: Scan, pos: number, at: Int32Array, allowUndefined: boolean, what: string): number {
  const buf = s.buf;
  const len = buf.length;
  const nCol = s.nCol;
  for (let i = 0; i < nCol; i++) {
    at[i] = pos;
    if (pos >= len) malformed(pos, `${what}: input ends before column ${i}`);
    const type = buf[pos]!;
    pos++;
    switch (type) {
      case T_UNDEFINED:
        // STRICTER: SQLite's iterator accepts undefined values in INSERT and
        // DELETE records too, and apply then binds nothing for them. Its own
        // format comment says these records never contain them.
        if (!allowUndefined) malformed(pos - 1, `${what}: column ${i} is undefined (type 0)`);
        break;
      case T_INTEGER:
        if (len - pos < 8) malformed(pos - 1, `${what}: column ${i}: INTEGER truncated`);
        pos += 8;
        break;
      case T_REAL:
        if (len - pos < 8) malformed(pos - 1, `${what}: column ${i}: REAL truncated`);
        // STRICTER: NaN. SQLite cannot store a NaN (it becomes NULL), so its
        // changesets never hold one, and one would not survive decode→encode.
        if (
          (buf[pos]! & 0x7f) === 0x7f &&
          (buf[pos + 1]! & 0xf0) === 0xf0 &&
          ((buf[pos + 1]! & 0x0f) | buf[pos + 2]! | buf[pos + 3]! | buf[pos + 4]! | buf[pos + 5]! | buf[pos + 6]! | buf[pos + 7]!) !== 0
        ) {
          malformed(pos - 1, `${what}: column ${i}: REAL is NaN`);
        }
        pos += 8;
        break;
      case T_TEXT:
      case T_BLOB: {
        let n = buf[pos] ?? 0x80;
        if (n < 0x80 && pos < len) {
          pos++;
        } else {
          n = readVarint(buf, pos, `${what}: column ${i}: ${type === T_TEXT ? "TEXT" : "BLOB"} length`);
          pos = varintEnd;
        }
        if (len - pos < n) {
          malformed(at[i]!, `${what}: column ${i}: ${type === T_TEXT ? "TEXT" : "BLOB"} of ${n} bytes runs past the end of the input`);
        }
        pos += n;
        break;
      }
      case T_NULL:
        break;
      default:
        // STRICTER than sqlite3changeset_next, which reads an unknown type
        // byte as NULL; sqlite3changeset_invert and changegroup refuse it.
        malformed(pos - 1, `${what}: column ${i}: unknown value type ${hex(type)}`);
    }
  }
  at[nCol] = pos;
  return pos;
}

/**
 * Which PK positions a header has used, marked with the header's stamp: no
 * array to allocate and clear per header (a one-row entry is mostly header).
 */
const pkSeen = new Uint32Array(256);
let stampNow = 0;
function nextStamp(): number {
  if (stampNow === 0xffffffff) {
    pkSeen.fill(0);
    stampNow = 0;
  }
  return ++stampNow;
}

/** Short ASCII names (nearly all of them) without the decoder's call; undefined when not ASCII or long. */
function asciiString(buf: Uint8Array, from: number, to: number): string | undefined {
  if (to - from > 64) return undefined;
  let out = "";
  for (let i = from; i < to; i++) {
    const b = buf[i]!;
    if (b >= 0x80) return undefined;
    out += String.fromCharCode(b);
  }
  return out;
}

function readTableHeader(s: Scan, pos: number): number {
  const buf = s.buf;
  const len = buf.length;
  s.tableStart = pos;
  pos++;
  const nCol = readVarint(buf, pos, "table header column count");
  // SQLite refuses 0 and anything above 65536. STRICTER: MAX_COLUMNS is
  // SQLite's default SQLITE_MAX_COLUMN, so no real table has more.
  if (nCol === 0) malformed(pos, "table header has 0 columns");
  if (nCol > MAX_COLUMNS) malformed(pos, `table header has ${nCol} columns, more than ${MAX_COLUMNS}`);
  pos = varintEnd;
  if (len - pos < nCol) malformed(pos, "table header: input ends inside the primary-key flags");
  // STRICTER: SQLite's iterator takes any byte as a flag (non-zero = PK) and
  // accepts a table without a PK. But the session module writes each PK
  // column's 1-based position in the PRIMARY KEY clause, and
  // sqlite3changeset_apply compares those bytes with the target table and
  // silently skips the whole table when they differ. So the non-zero flags
  // must be exactly 1..k, each once.
  const stamp = nextStamp();
  let k = 0;
  let max = 0;
  for (let i = 0; i < nCol; i++) {
    const f = buf[pos + i]!;
    if (f === 0) continue;
    if (pkSeen[f] === stamp) malformed(pos + i, `table header: primary-key position ${f} appears twice`);
    pkSeen[f] = stamp;
    k++;
    if (f > max) max = f;
  }
  if (k === 0) malformed(pos, "table header: no primary-key column");
  if (max !== k) malformed(pos, `table header: primary-key positions are not 1..${k}`);
  s.pkAt = pos;
  pos += nCol;
  const nameEnd = buf.indexOf(0, pos);
  if (nameEnd < 0) malformed(pos, "table header: table name has no NUL terminator");
  // STRICTER: SQLite accepts an empty name, names of its internal tables
  // (sqlite_stat1 is even recorded by sessions) and any bytes.
  if (nameEnd === pos) malformed(pos, "table header: empty table name");
  if (startsWithCI(buf, pos, nameEnd, "sqlite_")) malformed(pos, "table header: table name starts with sqlite_ (internal table)");
  if (startsWithCI(buf, pos, nameEnd, "_relay_")) malformed(pos, "table header: table name starts with _relay_ (reserved)");
  const ascii = asciiString(buf, pos, nameEnd);
  if (ascii !== undefined) s.name = ascii;
  else {
    try {
      s.name = strictUtf8.decode(buf.subarray(pos, nameEnd));
    } catch {
      malformed(pos, "table header: table name is not valid UTF-8");
    }
  }
  s.nCol = nCol;
  s.tableEnd = nameEnd + 1;
  if (s.oldAt.length <= nCol) {
    s.oldAt = new Int32Array(nCol + 1);
    s.newAt = new Int32Array(nCol + 1);
  }
  return s.tableEnd;
}

function readChange(s: Scan, pos: number): number {
  const buf = s.buf;
  const op = buf[pos]!;
  s.changeStart = pos;
  if (op !== OP_INSERT && op !== OP_UPDATE && op !== OP_DELETE) {
    if (op === PATCHSET_TABLE) malformed(pos, "patchset table header ('P'): patchsets are not accepted, only changesets");
    malformed(pos, `unknown change type ${hex(op)} (expected INSERT 0x12, UPDATE 0x17, DELETE 0x09 or a 'T' table header)`);
  }
  if (pos + 1 >= buf.length) malformed(pos, "change truncated after its type byte");
  // STRICTER: SQLite takes any byte here as the indirect flag and copies it
  // through invert; only 0 and 1 mean something.
  const indirect = buf[pos + 1]!;
  if (indirect > 1) malformed(pos + 1, `indirect flag is ${hex(indirect)}, not 0 or 1`);
  pos += 2;
  s.op = op;
  if (op === OP_INSERT) {
    pos = readRecord(s, pos, s.newAt, false, "INSERT record");
  } else if (op === OP_DELETE) {
    pos = readRecord(s, pos, s.oldAt, false, "DELETE record");
  } else {
    pos = readRecord(s, pos, s.oldAt, true, "UPDATE old record");
    pos = readRecord(s, pos, s.newAt, true, "UPDATE new record");
    checkUpdate(s);
  }
  s.changeEnd = pos;
  return pos;
}

/**
 * What the session module writes for an UPDATE: the old record holds every PK
 * column and the old value of each changed column; the new record holds the
 * new value of each changed column. SQLite's iterator checks none of this.
 */
function checkUpdate(s: Scan): void {
  const buf = s.buf;
  const { oldAt, newAt, nCol, pkAt } = s;
  let changesColumn = false;
  for (let i = 0; i < nCol; i++) {
    const oldType = buf[oldAt[i]!]!;
    const newType = buf[newAt[i]!]!;
    if (buf[pkAt + i] !== 0) {
      // STRICTER: the iterator accepts it, and apply then crashed or matched
      // the wrong rows. A new value on a PK column is allowed: SQLite writes
      // one when a PK value changes type but not value (1 → 1.0), and apply
      // ignores it.
      if (oldType === T_UNDEFINED) malformed(oldAt[i]!, `UPDATE old record lacks primary-key column ${i}`);
    } else if (oldType === T_UNDEFINED) {
      // STRICTER: without the old value there is nothing to detect a
      // conflict with, and invert could not produce the undo value.
      if (newType !== T_UNDEFINED) malformed(newAt[i]!, `UPDATE sets column ${i} without its old value`);
    } else {
      // STRICTER: the iterator silently drops such old values (an old
      // rebaser wrote them).
      if (newType === T_UNDEFINED) malformed(oldAt[i]!, `UPDATE has an old value for column ${i}, which it does not change`);
      changesColumn = true;
    }
  }
  // STRICTER: the iterator accepts an UPDATE that sets no non-PK column. With
  // no column at all apply skips it; with only PK columns apply fails
  // ("SQL logic error": it builds `UPDATE t SET  WHERE ...`) on every
  // replica. The session module writes the latter for a PK that changes
  // type only (1 → 1.0); such a transaction cannot be replicated.
  if (!changesColumn) malformed(s.changeStart, "UPDATE changes no non-primary-key column");
}

function newScan(buf: Uint8Array): Scan {
  return { buf, tableStart: 0, tableEnd: 0, nCol: 0, pkAt: 0, name: "", changeStart: 0, changeEnd: 0, op: 0, oldAt: new Int32Array(0), newAt: new Int32Array(0) };
}

/**
 * Runs every rule over `buf`, calling the visitor with each table header and
 * change once it has been checked. The one parser: validate, decode and the
 * client's invert (client/changeset-writer.ts) are visitors over it.
 */
export function scan(buf: Uint8Array, visitor: Visitor | undefined): { tables: number; changes: number } {
  const s = takeScan(buf);
  try {
    return scanWith(s, visitor);
  } finally {
    giveBack(s);
  }
}

/** validateChangeset's parser state, reused: without a visitor nothing can re-enter the scan. */
const NO_BYTES = new Uint8Array(0);
const validation = newScan(NO_BYTES) as { -readonly [K in keyof Scan]: Scan[K] };

/**
 * Parser states for scans with visitors, reused (a fresh one with its offset
 * arrays cost ~2 µs: most of scanning a one-row entry). A pool, not one
 * state, since a visitor may scan another changeset; visitors do not keep
 * the state past their call.
 */
type MutableScan = { -readonly [K in keyof Scan]: Scan[K] };
const scans: MutableScan[] = [];
function takeScan(buf: Uint8Array): MutableScan {
  const s = scans.pop() ?? (newScan(NO_BYTES) as MutableScan);
  s.buf = buf;
  return s;
}
function giveBack(s: MutableScan): void {
  s.buf = NO_BYTES; // not kept alive by the parser
  if (scans.length < 8) scans.push(s);
}

function scanWith(s: Scan, visitor: Visitor | undefined): { tables: number; changes: number } {
  const buf = s.buf;
  const len = buf.length;
  // STRICTER: SQLite reads zero bytes as a changeset without changes (and
  // patchsets, below, as changesets without old values); a push carries a
  // transaction's changes, and v1 replays full changesets only.
  if (len === 0) malformed(0, "empty input");
  const first = buf[0]!;
  if (first !== TABLE) {
    if (first === PATCHSET_TABLE) malformed(0, "this is a patchset ('P'), not a changeset: patchsets are not accepted");
    malformed(0, `does not start with a table header ('T' 0x54) but with ${hex(first)}`);
  }
  let tables = 0;
  let changes = 0;
  let pos = 0;
  while (pos < len) {
    if (buf[pos] === TABLE) {
      // A header followed directly by another header or the end is accepted,
      // as SQLite's iterator does; the session module never writes one.
      pos = readTableHeader(s, pos);
      tables++;
      visitor?.table(s);
    } else {
      pos = readChange(s, pos);
      changes++;
      visitor?.change(s);
    }
  }
  return { tables, changes };
}

/**
 * Strict validation without materialising values (the relay's fast path).
 * Throws RelayError("malformed_changeset").
 */
export function validateChangeset(bytes: Uint8Array): { tables: number; changes: number } {
  validation.buf = bytes;
  try {
    return scanWith(validation, undefined);
  } finally {
    validation.buf = NO_BYTES; // not kept alive by the parser
  }
}

function decodeValue(buf: Uint8Array, view: DataView, start: number): SqlValue | undefined {
  const type = buf[start]!;
  const p = start + 1;
  switch (type) {
    case T_INTEGER: {
      // hi * 2^32 + lo is exact whenever the result is a safe integer.
      const v = view.getInt32(p) * 4294967296 + view.getUint32(p + 4);
      return Number.isSafeInteger(v) ? v : view.getBigInt64(p);
    }
    case T_REAL:
      return view.getFloat64(p);
    case T_TEXT:
    case T_BLOB: {
      const n = readVarint(buf, p, "length");
      const from = varintEnd;
      // Text is not checked for valid UTF-8, as SQLite does not check it.
      return type === T_TEXT ? lenientUtf8.decode(buf.subarray(from, from + n)) : buf.slice(from, from + n);
    }
    case T_NULL:
      return null;
    default:
      return undefined;
  }
}

/** Numbers encodeChangeset writes as INTEGER; a REAL decoding to one of these must be marked. */
export function looksInteger(v: number): boolean {
  return Number.isSafeInteger(v) && !Object.is(v, -0);
}

function decodeRecord(s: Scan, view: DataView, at: Int32Array, reals: number[]): (SqlValue | undefined)[] {
  const out = new Array<SqlValue | undefined>(s.nCol);
  for (let i = 0; i < s.nCol; i++) {
    const v = decodeValue(s.buf, view, at[i]!);
    if (typeof v === "number" && s.buf[at[i]!] === T_REAL && looksInteger(v)) reals.push(i);
    out[i] = v;
  }
  return out;
}

/** Full decode, with exactly the strictness of validateChangeset. */
function headerOf(s: Scan): TableHeader {
  const pkRaw = s.buf.slice(s.pkAt, s.pkAt + s.nCol);
  return { name: s.name, pk: Array.from(pkRaw, (f) => f !== 0), pkRaw };
}

/**
 * The table headers of a changeset (validating all of it), without
 * materialising values: what a replica checks against its schema before an
 * apply, at the cost of a validation rather than a decode.
 */
export function changesetTables(bytes: Uint8Array): TableHeader[] {
  const known = bytes.byteLength >= REMEMBERED_BYTES ? scanned.get(bytes) : undefined;
  if (known) return [...known];
  const tables: TableHeader[] = [];
  scan(bytes, {
    table(s) {
      tables.push(sharedHeader(s));
    },
    change() {},
  });
  if (bytes.byteLength >= REMEMBERED_BYTES) scanned.set(bytes, [...tables]);
  return tables;
}

/**
 * The tables of large changesets already scanned, by the array that holds
 * them: a receiver's apply checks an entry's tables and its sync step lists
 * them for the change event, one full scan each (~10 ms for W1's 6 MB entry).
 * Entries' bytes are never written once received or captured; small ones
 * cost less to scan again than to remember.
 */
const REMEMBERED_BYTES = 64 * 1024;
const scanned = new WeakMap<Uint8Array, readonly TableHeader[]>();

/**
 * The header last decoded by changesetTables, with its bytes: a live
 * writer's changesets, a frame's entries and a push's repeat the same one
 * (decoding it again cost ~3 µs: two small allocations). Shared, so frozen.
 */
let lastHeader: { bytes: Uint8Array; header: TableHeader } | undefined;
function sharedHeader(s: Scan): TableHeader {
  const last = lastHeader;
  if (last && last.bytes.length === s.tableEnd - s.tableStart && sameBytes(last.bytes, 0, last.bytes.length, s.buf, s.tableStart)) return last.header;
  const header = headerOf(s);
  Object.freeze(header.pk);
  lastHeader = { bytes: s.buf.slice(s.tableStart, s.tableEnd), header: Object.freeze(header) };
  return header;
}

/** A header seen by tableBlocks, found again by its bytes. */
interface SeenHeader {
  buf: Uint8Array;
  start: number;
  end: number;
  pkOffset: number;
  nCol: number;
  header: TableHeader;
}

function sameBytes(a: Uint8Array, aStart: number, aEnd: number, b: Uint8Array, bStart: number): boolean {
  if (b.length - bStart < aEnd - aStart) return false;
  for (let i = aStart, j = bStart; i < aEnd; i++, j++) if (a[i] !== b[j]) return false;
  return true;
}

/**
 * The table blocks of several changesets (a page of log entries), in order,
 * each changeset validated as validateChangeset does, with each distinct
 * table header decoded once: a header byte-identical to one met before in
 * this call (a page of small entries repeats the same few) is neither checked
 * nor decoded again, and its blocks share one TableHeader object. `block`
 * gets the block's changeset index, the offsets of its 'T' byte, of its first
 * change and of its end, and `first` when its header is new to this call.
 */
export function tableBlocks(
  parts: readonly Uint8Array[],
  block: (part: number, start: number, body: number, end: number, header: TableHeader, first: boolean) => void,
): void {
  const seen: SeenHeader[] = [];
  for (let part = 0; part < parts.length; part++) {
    const buf = parts[part]!;
    if (buf.length === 0) continue;
    if (buf[0] !== TABLE) scan(buf, undefined); // throws what validateChangeset throws
    const s = takeScan(buf);
    try {
      let open: { start: number; body: number; header: TableHeader; first: boolean } | undefined;
      let pos = 0;
      while (pos < buf.length) {
        if (buf[pos] !== TABLE) {
          pos = readChange(s, pos);
          continue;
        }
        if (open) block(part, open.start, open.body, pos, open.header, open.first);
        const known = seen.find((h) => sameBytes(h.buf, h.start, h.end, buf, pos));
        if (known) {
          // The bytes end with the name's NUL, so equal bytes are the whole header.
          s.tableStart = pos;
          s.tableEnd = pos + (known.end - known.start);
          s.pkAt = pos + known.pkOffset;
          s.nCol = known.nCol;
          s.name = known.header.name;
          if (s.oldAt.length <= s.nCol) {
            s.oldAt = new Int32Array(s.nCol + 1);
            s.newAt = new Int32Array(s.nCol + 1);
          }
          open = { start: pos, body: s.tableEnd, header: known.header, first: false };
        } else {
          readTableHeader(s, pos);
          const header = headerOf(s);
          seen.push({ buf, start: pos, end: s.tableEnd, pkOffset: s.pkAt - pos, nCol: s.nCol, header });
          open = { start: pos, body: s.tableEnd, header, first: true };
        }
        pos = s.tableEnd;
      }
      if (open) block(part, open.start, open.body, buf.length, open.header, open.first);
    } finally {
      giveBack(s);
    }
  }
}

export function decodeChangeset(bytes: Uint8Array): Changeset {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tables: TableHeader[] = [];
  const changes: Change[] = [];
  let table: TableHeader | undefined;
  scan(bytes, {
    table(s) {
      table = headerOf(s);
      tables.push(table);
    },
    change(s) {
      const realsOld: number[] = [];
      const realsNew: number[] = [];
      const op: ChangeOp = s.op === OP_INSERT ? "insert" : s.op === OP_UPDATE ? "update" : "delete";
      const change: Change = {
        table: table!,
        op,
        indirect: s.buf[s.changeStart + 1] === 1,
        old: op === "insert" ? undefined : decodeRecord(s, view, s.oldAt, realsOld),
        new: op === "delete" ? undefined : decodeRecord(s, view, s.newAt, realsNew),
      };
      if (realsOld.length > 0 || realsNew.length > 0) change.integralReals = { old: realsOld, new: realsNew };
      changes.push(change);
    },
  });
  return { tables, changes };
}


/** Values of the PK columns of a change (from old for update/delete, new for insert), in column order. */
export function primaryKey(change: Change): SqlValue[] {
  const record = change.op === "insert" ? change.new : change.old;
  if (record === undefined) {
    throw new RelayError("malformed_changeset", `primaryKey: ${change.op} change without its ${change.op === "insert" ? "new" : "old"} record`);
  }
  const out: SqlValue[] = [];
  change.table.pk.forEach((isPk, i) => {
    if (!isPk) return;
    const v = record[i];
    if (v === undefined) throw new RelayError("malformed_changeset", `primaryKey: primary-key column ${i} of ${JSON.stringify(change.table.name)} is undefined`);
    out.push(v);
  });
  return out;
}
