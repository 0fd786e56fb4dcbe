import { RelayError } from "./errors.ts";
import type { Driver } from "./drivers/types.ts";

/**
 * NULL primary keys. A rowid table whose PRIMARY KEY is not the rowid alias
 * accepts NULL in its key columns (a SQLite quirk kept for compatibility), and
 * the session extension does not record rows whose key holds a NULL: such a
 * row would stay on this replica for ever and nobody would be told
 * (invariant 8). So every such table gets TEMP triggers that refuse those
 * writes when they are made. TEMP triggers belong to this connection: they
 * are not in the database's schema, never replicate, and are made again at
 * every open and after every schema change. Log entries never carry a NULL
 * key, so replaying them never trips these.
 */
const MARK = "relay: NULL primary key";
const PREFIX = "_relay_null_key_";

/** (Re)create the guards for the replicated tables `tables`. */
export function refuseNullKeys(d: Driver, tables: readonly string[]): void {
  for (const { name } of d.all("SELECT name FROM sqlite_temp_schema WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'", [`${PREFIX.replace(/_/g, "\\_")}%`])) {
    d.exec(`DROP TRIGGER temp.${quote(name as string)}`);
  }
  tables.forEach((table, i) => {
    const nullable = nullableKey(d, table);
    if (nullable.length === 0) return;
    const when = nullable.map((c) => `NEW.${quote(c)} IS NULL`).join(" OR ");
    const raise = `SELECT RAISE(ABORT, '${MARK} in ${table.replace(/'/g, "''")}: the row would never replicate');`;
    d.exec(`CREATE TEMP TRIGGER ${PREFIX}${i}_insert BEFORE INSERT ON main.${quote(table)} WHEN ${when} BEGIN ${raise} END`);
    d.exec(`CREATE TEMP TRIGGER ${PREFIX}${i}_update BEFORE UPDATE OF ${nullable.map(quote).join(", ")} ON main.${quote(table)} WHEN ${when} BEGIN ${raise} END`);
  });
}

/** A write the guards refused, as the typed error; anything else unchanged. */
export function nullKeyError(e: unknown): unknown {
  const message = (e as Error | undefined)?.message;
  if (typeof message !== "string" || !message.includes(MARK)) return e;
  return new RelayError("null_primary_key", `${message.slice(message.indexOf(MARK))}: give every primary key column a value (or declare it NOT NULL)`, { cause: e });
}

/** Key columns that may hold NULL: those of a rowid table whose key is not the rowid alias and not declared NOT NULL. */
function nullableKey(d: Driver, table: string): string[] {
  if (d.all("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", [table])[0]?.wr === 1) return [];
  const keys = d.all("SELECT name, type, \"notnull\" AS nn FROM pragma_table_info(?) WHERE pk > 0", [table]);
  const alias = keys.length === 1 && String(keys[0]!.type).toUpperCase() === "INTEGER" && d.all("SELECT 1 FROM pragma_index_list(?) WHERE origin = 'pk'", [table]).length === 0;
  if (alias) return [];
  return keys.filter((k) => k.nn !== 1).map((k) => k.name as string);
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
