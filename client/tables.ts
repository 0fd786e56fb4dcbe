import type { Driver } from "./drivers/types.ts";

/**
 * Which of the database's tables replicate. Local tables are never captured,
 * never pushed and need no primary key:
 *   - virtual tables (FTS5, R-tree...) and their shadow tables: an index is
 *     rebuilt on every replica by the triggers that keep it (triggers.ts), and
 *     its internals differ between replicas anyway;
 *   - tables the app declares local (`local` option: names, or patterns with
 *     `*`), e.g. drafts, caches, UI state.
 * SQLite's own tables (sqlite_*) and the library's (_relay_*) are neither:
 * they are internal.
 */
export class Tables {
  private readonly d: Driver;
  private readonly patterns: RegExp[];
  private version = -1;
  private replicatedNames: string[] = [];
  private localNames = new Set<string>();
  private localList: string[] = [];

  constructor(d: Driver, local: readonly string[] = []) {
    this.d = d;
    this.patterns = local.map(pattern);
  }

  /** Read the table list again if the schema changed since (`version`: PRAGMA schema_version). */
  at(version: number): this {
    if (version === this.version) return this;
    this.replicatedNames = [];
    this.localNames.clear();
    this.localList = [];
    const rows = this.d.all("SELECT name, type FROM pragma_table_list WHERE schema = 'main' AND type IN ('table', 'virtual', 'shadow') ORDER BY name");
    for (const { name, type } of rows as { name: string; type: string }[]) {
      if (internal(name)) continue;
      if (type !== "table" || this.declaredLocal(name)) {
        this.localNames.add(name.toLowerCase());
        this.localList.push(name);
      } else this.replicatedNames.push(name);
    }
    this.version = version;
    return this;
  }

  /** Forget the list (a transaction that changed the schema rolled back). */
  reset(): void {
    this.version = -1;
  }

  get replicated(): readonly string[] {
    return this.replicatedNames;
  }

  /** The local tables, as the schema spells them. */
  get local(): readonly string[] {
    return this.localList;
  }

  /** An existing local table (virtual, shadow or declared), by name, any case. */
  isLocal(name: string): boolean {
    return this.localNames.has(name.toLowerCase());
  }

  /** The tables a session records: undefined (all of them, the cheapest) when there is no local table. */
  sessionTables(): readonly string[] | undefined {
    return this.localNames.size === 0 ? undefined : this.replicatedNames;
  }

  private declaredLocal(name: string): boolean {
    return this.patterns.some((p) => p.test(name));
  }
}

export function internal(name: string): boolean {
  return /^(sqlite_|_relay_)/i.test(name);
}

/** `*` matches any run of characters; names compare case-insensitively, as SQLite's do. */
function pattern(p: string): RegExp {
  return new RegExp(`^${p.split("*").map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`, "i");
}

/**
 * Replicated tables whose primary key is a rowid alias (INTEGER PRIMARY KEY
 * in a rowid table): SQLite fills it with max(rowid)+1 when an INSERT gives
 * none, so two offline replicas pick the same key. A rowid table with any
 * other primary key has an automatic index for it ("pk" origin); the alias
 * has none.
 */
export function rowidKeyed(d: Driver, tables: readonly string[]): string[] {
  return tables.filter((t) => {
    const withoutRowid = d.all("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", [t])[0]?.wr === 1;
    if (withoutRowid) return false;
    const keys = d.all("SELECT type FROM pragma_table_info(?) WHERE pk > 0", [t]);
    if (keys.length !== 1 || String(keys[0]!.type).toUpperCase() !== "INTEGER") return false;
    return d.all("SELECT 1 FROM pragma_index_list(?) WHERE origin = 'pk'", [t]).length === 0;
  });
}
