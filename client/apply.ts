import { changesetTables, decodeChangeset, primaryKey, tableBlocks, type Change, type SqlValue, type TableHeader } from "../protocol/changeset.ts";
import { encodeChangeset } from "./changeset-writer.ts";
import { RelayError } from "./errors.ts";
import { CONFLICT, RESOLUTION, type ConflictType, type Driver, type Row } from "./drivers/types.ts";
import { resolve, type ConflictInfo, type ConflictKind, type ConflictOptions, type ConflictRecord } from "./conflicts.ts";
import { keyQuery, keyRow, onlyKeyConstraints, tableInfo, type ColumnInfo } from "./store.ts";
import { Tables } from "./tables.ts";

/**
 * Apply one changeset under the conflict policy, the same way on every driver.
 *
 * node:sqlite's conflict handler learns only the conflict type, not the row,
 * so the row-level decisions are made here with the changeset codec:
 * 1. fast path: apply, aborting at the first conflict (SQLite rolls the
 *    apply back). Most entries conflict with nothing and cost one apply.
 * 2. otherwise predict each change's conflict against the current rows,
 *    resolve it by policy, drop the omitted changes from the changeset, and
 *    apply the rest letting SQLite REPLACE the conflicts that were kept.
 * Constraint violations can only be seen by SQLite; the changes they omitted
 * are found afterwards by checking which kept changes did not land.
 */
export interface EntryRef {
  seq: number;
  client: string;
  cseq: number;
}

export function applyWithPolicy(d: Driver, changeset: Uint8Array, ref: EntryRef, policy: ConflictOptions, schema: SchemaCache): ConflictRecord[] {
  if (changeset.byteLength === 0) return [];
  for (const t of changesetTables(changeset)) schema.check(t);
  let conflicted = false;
  const clean = apply(d, changeset, () => {
    conflicted = true;
    return RESOLUTION.ABORT;
  });
  if (clean) return [];
  if (!conflicted) throw new RelayError("apply_failed", `entry ${ref.seq} was aborted by SQLite`);

  const decoded = decodeChangeset(changeset);
  const records: ConflictRecord[] = [];
  const keep: Resolved[] = [];
  for (const change of decoded.changes) {
    const r = resolveChange(schema, change);
    const info = predict(r, keyRow(d, r.target.byKey, r.pk), ref);
    if (!info) {
      keep.push(r);
      continue;
    }
    const resolution = resolve(info, policy);
    records.push({ ...info, resolution });
    if (resolution === "replace") keep.push(r);
  }
  let constraint = false;
  apply(d, encodeChangeset({ tables: decoded.tables, changes: keep.map((r) => r.change) }), (type) => {
    if (type === CONFLICT.DATA || type === CONFLICT.CONFLICT) return RESOLUTION.REPLACE;
    if (type === CONFLICT.CONSTRAINT) constraint = true;
    // NOTFOUND cannot be replaced; FOREIGN_KEY: OMIT keeps the rest of the entry.
    return RESOLUTION.OMIT;
  });
  if (constraint) {
    for (const r of keep) {
      const row = keyRow(d, r.target.byKey, r.pk);
      if (!landed(r, row)) records.push({ ...conflictInfo("constraint", r, row, ref), resolution: "omit" });
    }
  }
  return records;
}

/**
 * Consecutive log entries applied as one changeset, when none of them
 * conflicts with anything: one sqlite3changeset_apply instead of one per
 * entry, whose fixed cost dominated catching up on small entries (~15 µs an
 * entry one by one, ~1 µs together). A changeset is a sequence of table
 * blocks applied in order, so the entries' blocks are concatenated, and a
 * block whose header is byte-identical to the block before it loses its
 * header: a page of small entries on one table becomes one block. Each
 * distinct header is decoded and checked against the schema once per call
 * (tableBlocks), not once per entry, and SQLite reads one header instead of
 * thousands (on sqlite-wasm a repeated header cost ~15 µs an entry).
 * False, with nothing changed (SQLite rolls the apply back), at the first
 * conflict or error: the caller then applies them one by one under the
 * policy.
 */
export function applyAllClean(d: Driver, changesets: readonly Uint8Array[], schema: SchemaCache): boolean {
  const ranges: number[] = []; // part, from, to: the bytes that go in, in order
  let size = 0;
  let last: TableHeader | undefined;
  let groupable = true;
  const names = new Set<string>();
  tableBlocks(changesets, (part, start, body, end, header, first) => {
    if (first) {
      schema.check(header);
      // SQLite tells tables apart by name within one apply: a table's blocks
      // with two different headers (columns added between entries, a schema
      // version's boundary) would share the statements prepared for the
      // first. SQLite 3.53.4 (node:sqlite) then binds the previous row's
      // values to a narrower block's missing columns (3.54.1 does not).
      const name = header.name.toLowerCase();
      if (names.has(name)) groupable = false;
      names.add(name);
      // Within one apply, SQLite defers a change that fails a constraint
      // and retries it after the rest: a later entry could then make an
      // earlier one succeed that fails when applied alone. Replicas group
      // entries differently (pages, live frames), so only tables whose one
      // constraint is the primary key (reported as a conflict, never
      // deferred) may be grouped.
      if (!schema.onlyKeyConstraints(header.name)) groupable = false;
    }
    const from = header === last ? body : start;
    last = header;
    ranges.push(part, from, end);
    size += end - from;
  });
  if (!groupable) return false;
  const all = new Uint8Array(size);
  let at = 0;
  for (let i = 0; i < ranges.length; i += 3) {
    const bytes = changesets[ranges[i]!]!.subarray(ranges[i + 1]!, ranges[i + 2]!);
    all.set(bytes, at);
    at += bytes.byteLength;
  }
  try {
    return size === 0 || apply(d, all, () => RESOLUTION.ABORT);
  } catch (e) {
    // A poison entry among them: the caller finds it one by one. Anything
    // else (a full disk...) is not the entries' fault, and SQLite may have
    // rolled back the whole transaction: going on would apply the rest
    // outside of it, one autocommit at a time.
    if (isEntryFault(e) && d.inTransaction) return false;
    throw e;
  }
}

/**
 * Primary SQLite result codes with which an apply fails because of the entry
 * itself (given the schema all replicas share): every replica fails alike, so
 * every replica may skip it (a "poison" entry). Anything else (FULL, IOERR, NOMEM, BUSY, ...)
 * is this replica's own trouble, and skipping the entry here would make it
 * diverge for good.
 */
const ENTRY_FAULTS: ReadonlySet<number> = new Set([
  1, // SQLITE_ERROR ("SQL logic error": e.g. an UPDATE SQLite cannot express)
  11, // SQLITE_CORRUPT
  18, // SQLITE_TOOBIG
  19, // SQLITE_CONSTRAINT (outside the conflict handler's reach)
  20, // SQLITE_MISMATCH (e.g. TEXT into an INTEGER PRIMARY KEY)
  21, // SQLITE_MISUSE
  25, // SQLITE_RANGE
]);

export function isEntryFault(err: unknown): boolean {
  if (!(err instanceof RelayError) || err.code !== "apply_failed") return false;
  // Both drivers put SQLite's (extended) result code on the cause as `errcode`.
  const errcode = (err.cause as { errcode?: unknown } | undefined)?.errcode;
  return typeof errcode !== "number" || ENTRY_FAULTS.has(errcode & 0xff);
}

function apply(d: Driver, changeset: Uint8Array, onConflict: (t: ConflictType) => 0 | 1 | 2): boolean {
  return d.applyChangeset(changeset, onConflict);
}

/**
 * A changeset's table resolved against the local schema: its column names
 * and the query for one row by primary key. Resolved once per table and
 * schema version, and once per change (resolveChange), then passed along.
 */
export interface Target {
  names: string[];
  byKey: string;
}

/**
 * Local table definitions, checked against every changeset's table headers
 * before applying: SQLite silently skips a table whose local definition has
 * fewer columns or other primary key columns, and that would be silent loss.
 */
export class SchemaCache {
  private readonly tables = new Map<string, (ColumnInfo & Target) | undefined>();
  private readonly keyOnly = new Map<string, boolean>();
  private readonly d: Driver;
  /** Which tables replicate; the owner moves it to the schema version (`at`) when it clears this cache. */
  readonly replicated: Tables;
  constructor(d: Driver, tables = new Tables(d)) {
    this.d = d;
    this.replicated = tables;
  }
  clear(): void {
    this.tables.clear();
    this.keyOnly.clear();
  }
  /** See store.onlyKeyConstraints. */
  onlyKeyConstraints(table: string): boolean {
    const key = table.toLowerCase();
    let ok = this.keyOnly.get(key);
    if (ok === undefined) this.keyOnly.set(key, (ok = onlyKeyConstraints(this.d, table)));
    return ok;
  }
  private info(table: string): (ColumnInfo & Target) | undefined {
    const key = table.toLowerCase();
    if (!this.tables.has(key)) {
      const info = tableInfo(this.d, table);
      this.tables.set(key, info && { ...info, byKey: keyQuery(table, info.names.filter((_, i) => info.pk[i]! > 0)) });
    }
    return this.tables.get(key);
  }
  check(t: TableHeader): Target {
    const local = this.info(t.name);
    const mismatch = (why: string): never => {
      throw new RelayError("schema_mismatch", `changeset table "${t.name}" does not match the local schema: ${why}`);
    };
    if (!local) return mismatch("no such table");
    // Another replica declares it replicated: applying it here would write what this app keeps local.
    if (this.replicated.isLocal(t.name)) mismatch("it is a local table here");
    if (local.names.length < t.pk.length) mismatch(`${t.pk.length} columns in the changeset, ${local.names.length} locally`);
    // SQLite compares each column's position in the PRIMARY KEY, not just
    // membership: once it matches, the local key columns are the change's.
    local.pk.forEach((p, i) => {
      const theirs = t.pkRaw?.[i] ?? (t.pk[i] ? -1 : 0);
      if (p !== theirs) mismatch(`primary key differs at column ${i} ("${local.names[i]}")`);
    });
    return local;
  }
}

/** One change with its table and key resolved. */
export interface Resolved {
  change: Change;
  target: Target;
  pk: SqlValue[];
}

function resolveChange(schema: SchemaCache, change: Change): Resolved {
  const target = schema.check(change.table);
  return { change, target, pk: primaryKey(change) };
}

function sameValue(a: SqlValue | undefined, b: SqlValue | undefined): boolean {
  if (a === b) return true;
  if ((typeof a === "number" || typeof a === "bigint") && (typeof b === "number" || typeof b === "bigint")) {
    return Number.isInteger(Number(a)) && Number.isInteger(Number(b)) ? BigInt(a) === BigInt(b) : Number(a) === Number(b);
  }
  if (a instanceof Uint8Array && b instanceof Uint8Array) return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
  return false;
}

function rowOf(names: string[], values: (SqlValue | undefined)[] | undefined): Row | null {
  if (!values) return null;
  const row: Row = {};
  values.forEach((v, i) => {
    if (v !== undefined) row[names[i] ?? `column${i}`] = v;
  });
  return row;
}

function conflictInfo(kind: ConflictKind, r: Resolved, local: Row | null, ref: EntryRef): ConflictInfo {
  const { change, target } = r;
  return {
    kind,
    table: change.table.name,
    op: change.op,
    pk: r.pk,
    local,
    incoming: { old: rowOf(target.names, change.old), new: rowOf(target.names, change.new) },
    ...ref,
  };
}

/**
 * The conflict SQLite will report for this change against `local` (the row
 * with its key now, or null), if any. Pure: the decision per change.
 */
export function conflictKind(change: Change, names: readonly string[], local: Row | null): ConflictKind | undefined {
  if (change.op === "insert") return local ? "conflict" : undefined;
  if (!local) return "notfound";
  return change.old!.some((v, i) => v !== undefined && !sameValue(local[names[i]!], v)) ? "data" : undefined;
}

function predict(r: Resolved, local: Row | null, ref: EntryRef): ConflictInfo | undefined {
  const kind = conflictKind(r.change, r.target.names, local);
  return kind && conflictInfo(kind, r, local, ref);
}

/** Whether a kept change is reflected in `row`, its key's row after the apply (false: SQLite omitted it on a constraint). */
export function landed({ change, target }: Pick<Resolved, "change" | "target">, row: Row | null): boolean {
  if (change.op === "delete") return row === null;
  return row !== null && change.new!.every((v, i) => v === undefined || sameValue(row[target.names[i]!], v));
}
