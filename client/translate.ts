import { decodeChangeset, type Change, type SqlValue, type TableHeader } from "../protocol/changeset.ts";
import { capturedColumns, type Statement } from "../protocol/schema.ts";
import { encodeChangeset } from "./changeset-writer.ts";
import type { Driver } from "./drivers/types.ts";
import { RelayError } from "./errors.ts";
import type { SchemaState } from "./migrate.ts";

/**
 * A changeset captured under schema version `from`, rewritten for the tables
 * of version `to`, column by name: a column follows the versions' ALTER TABLE
 * … RENAME [COLUMN] statements; a dropped column's values are dropped (and
 * reported), a dropped table's changes too; a column added since takes its
 * DEFAULT. That is what the migrations themselves do to rows already there,
 * so an entry applied translated ends where it would have ended applied
 * first and migrated after — the replicas that do either converge.
 * Generated columns are not in changesets, so they need nothing.
 */
export interface Dropped {
  /** The local transaction the values belonged to (its cseq); 0 when not one of ours. */
  cseq: number;
  table: string;
  columns: string[];
}

interface Plan {
  header: TableHeader;
  /** For each target column, the source column it takes its value from, or -1. */
  from: number[];
  /** Values of target columns without a source (their DEFAULT). */
  defaults: SqlValue[];
}

const same = (a: string | null, b: string) => a !== null && a.toLowerCase() === b.toLowerCase();

export function translate(d: Driver, state: SchemaState, bytes: Uint8Array, from: number, to: number): { changeset: Uint8Array; dropped: Omit<Dropped, "cseq">[] } {
  const cs = decodeChangeset(bytes);
  const plans = new Map<TableHeader, Plan | null>();
  for (const h of cs.tables) plans.set(h, plan(d, state, h, from, to));
  if ([...plans].every(([h, p]) => p !== null && isIdentity(h, p))) return { changeset: bytes, dropped: [] };
  const lost = new Map<string, Set<string>>();
  const note = (table: string, column: string) => {
    let s = lost.get(table);
    if (!s) lost.set(table, (s = new Set()));
    s.add(column);
  };
  const changes: Change[] = [];
  for (const c of cs.changes) {
    const p = plans.get(c.table)!;
    const record = c.op === "delete" ? c.old! : c.new!;
    if (c.op !== "delete") {
      record.forEach((v, i) => {
        if (v !== undefined && v !== null && (p === null || !p.from.includes(i))) note(c.table.name, columnName(state, from, c.table, i));
      });
    }
    if (p === null) continue;
    const pick = (values: (SqlValue | undefined)[] | undefined, fill: boolean) =>
      values && p.from.map((i, j) => (i >= 0 ? values[i] : fill ? p.defaults[j] : undefined));
    const out: Change = { table: p.header, op: c.op, indirect: c.indirect, old: pick(c.old, c.op === "delete"), new: pick(c.new, c.op === "insert") };
    // An UPDATE of dropped columns only is no change at all.
    if (c.op === "update" && !out.new!.some((v, j) => v !== undefined && p.header.pkRaw![j] === 0)) continue;
    if (c.integralReals) {
      const move = (cols: number[]) => cols.map((i) => p.from.indexOf(i)).filter((j) => j >= 0);
      out.integralReals = { old: move(c.integralReals.old), new: move(c.integralReals.new) };
    }
    changes.push(out);
  }
  const tables = [...new Set(changes.map((c) => c.table))];
  return { changeset: encodeChangeset({ tables, changes }), dropped: [...lost].map(([table, cols]) => ({ table, columns: [...cols] })) };
}

function columnName(state: SchemaState, version: number, h: TableHeader, i: number): string {
  const t = state.shapes(version).get(h.name.toLowerCase());
  return t ? capturedColumns(t)[i]?.name ?? `column ${i}` : `column ${i}`;
}

function isIdentity(h: TableHeader, p: Plan): boolean {
  return p.header.name === h.name && p.from.length === h.pk.length && p.from.every((i, j) => i === j && p.header.pkRaw![j] === (h.pkRaw?.[j] ?? 0));
}

/** How one table's changes move from `from` to `to`; null: the table is gone. */
function plan(d: Driver, state: SchemaState, h: TableHeader, from: number, to: number): Plan | null {
  const source = state.shapes(from).get(h.name.toLowerCase());
  const mismatch = (why: string): never => {
    throw new RelayError("schema_mismatch", `changeset table "${h.name}" does not fit schema version ${from}: ${why}`);
  };
  if (!source) return mismatch("no such table");
  const cols = capturedColumns(source);
  if (cols.length !== h.pk.length) mismatch(`${h.pk.length} columns in the changeset, ${cols.length} in the version`);
  let table: string | null = source.name;
  let names: (string | null)[] = cols.map((c) => c.name);
  for (let v = from + 1; v <= to; v++) {
    for (const s of state.statements(v)) if (table !== null) [table, names] = follow(s, table, names);
  }
  const target = table === null ? undefined : state.shapes(to).get(table.toLowerCase());
  if (!target || target.local) return null;
  const tcols = capturedColumns(target);
  const fromIdx = tcols.map((c) => names.findIndex((n) => same(n, c.name)));
  if (tcols.some((c, j) => c.pk > 0 && (fromIdx[j]! < 0 || !h.pk[fromIdx[j]!]))) mismatch(`its primary key does not carry over to version ${to}`);
  return {
    header: { name: target.name, pk: tcols.map((c) => c.pk > 0), pkRaw: Uint8Array.from(tcols, (c) => c.pk) },
    from: fromIdx,
    defaults: tcols.map((c, j) => (fromIdx[j]! >= 0 ? null : defaultValue(d, c.dflt))),
  };
}

/** One statement's effect on a table's name and its columns' names (null: gone). */
function follow(s: Statement, table: string, names: (string | null)[]): [string | null, (string | null)[]] {
  if (s.op === "drop" && s.type === "table" && same(table, s.name)) return [null, names];
  if (s.op !== "alter" || !same(table, s.name)) return [table, names];
  if (s.renameTo !== undefined) return [s.renameTo, names];
  const rc = s.renameColumn;
  if (rc) return [table, names.map((n) => (same(n, rc.from) ? rc.to : n))];
  const dc = s.dropColumn;
  if (dc !== undefined) return [table, names.map((n) => (same(n, dc) ? null : n))];
  return [table, names];
}

/** A column's DEFAULT, as SQLite evaluates it (ALTER TABLE ADD COLUMN only allows constant ones). */
function defaultValue(d: Driver, dflt: string | null): SqlValue {
  if (dflt === null) return null;
  return d.all(`SELECT (${dflt}) AS v`)[0]!.v as SqlValue;
}
