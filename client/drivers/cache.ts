/** Prepared statements kept per connection; the sync engine reuses a few dozen at most. */
const STATEMENT_CACHE_SIZE = 64;

/**
 * Prepared statements by SQL text, at most 64, both drivers. A hit only sets
 * a flag (second-chance eviction, an approximation of LRU): reordering a Map
 * on every hit cost more than stepping a small statement.
 */
export class StatementCache<T> {
  readonly #entries = new Map<string, { value: T; used: boolean }>();
  readonly #evict: (value: T) => void;

  /** `evict` frees a statement pushed out of the cache. */
  constructor(evict: (value: T) => void) {
    this.#evict = evict;
  }

  get(sql: string, prepare: (sql: string) => T): T {
    const hit = this.#entries.get(sql);
    if (hit) {
      hit.used = true;
      return hit.value;
    }
    const value = prepare(sql);
    while (this.#entries.size >= STATEMENT_CACHE_SIZE) {
      // Oldest first; one used since its last chance moves to the back instead.
      const [key, oldest] = this.#entries.entries().next().value!;
      this.#entries.delete(key);
      if (oldest.used) this.#entries.set(key, { value: oldest.value, used: false });
      else this.#evict(oldest.value);
    }
    this.#entries.set(sql, { value, used: false });
    return value;
  }

  /** Frees every statement. */
  clear(): void {
    for (const { value } of this.#entries.values()) this.#evict(value);
    this.#entries.clear();
  }
}
