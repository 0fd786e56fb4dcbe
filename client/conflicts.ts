import type { ChangeOp, SqlValue } from "../protocol/changeset.ts";
import type { Row } from "./drivers/types.ts";

/**
 * Conflict policy. Resolution must be a pure function of the conflict (kind,
 * table, values): every replica resolves the same conflict the same way, which
 * is what makes them converge. Never consult the clock, randomness, or which
 * replica you are in `onConflict`.
 */
export type ConflictKind = "data" | "notfound" | "conflict" | "constraint" | "foreign_key" | "corrupt";
export type Resolution = "replace" | "omit";
/** log-order: the entry later in the log wins. first-write-wins: the row as the earlier entry left it wins. */
export type TablePolicy = "log-order" | "first-write-wins";

export interface ConflictInfo {
  kind: ConflictKind;
  table: string;
  op: ChangeOp;
  /** Primary key values in PK column order. */
  pk: SqlValue[];
  /** The row as it is locally when the entry arrives (null when absent). */
  local: Row | null;
  /** The entry's old and new values, by column name (only the columns the change carries). */
  incoming: { old: Row | null; new: Row | null };
  /** The log entry: seq, and who wrote it. seq is 0 while a pending local write is rebased. */
  seq: number;
  client: string;
  cseq: number;
}

export interface ConflictRecord extends ConflictInfo {
  resolution: Resolution;
}

export interface ConflictOptions {
  default?: TablePolicy;
  tables?: Record<string, TablePolicy>;
  /**
   * Decide a conflict yourself; return undefined to fall back to the table's
   * policy. Only data and conflict (insert of an existing key) conflicts can
   * be replaced; SQLite allows nothing but omit for the others.
   */
  onConflict?: (info: ConflictInfo) => Resolution | undefined;
}

export function resolve(info: ConflictInfo, opts: ConflictOptions): Resolution {
  const replaceable = info.kind === "data" || info.kind === "conflict";
  const custom = opts.onConflict?.(info);
  if (custom !== undefined) {
    if (custom !== "replace" && custom !== "omit") throw new TypeError(`onConflict must return "replace", "omit" or undefined, got ${String(custom)}`);
    return replaceable ? custom : "omit";
  }
  if (!replaceable) return "omit";
  const policy = opts.tables?.[info.table] ?? opts.default ?? "log-order";
  return policy === "log-order" ? "replace" : "omit";
}
