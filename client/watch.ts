import type { SqlValue } from "../protocol/changeset.ts";
import type { Params, Row } from "./drivers/types.ts";

/**
 * Watched queries: re-run a query when a committed change can have changed
 * its rows, and call back only when they did. The tables a query reads come
 * from SQLite (the driver's authorizer while it compiles the statement:
 * joins, subqueries, views resolved to their base tables); the tables a
 * commit changed come with its "change" event. A watch whose tables are not
 * known (not read yet, or this SQLite cannot tell) is re-run on every change.
 *
 * Coalescing: a change only marks a watch dirty; one re-run serves every
 * change that came before it starts, so a burst of commits (or one sync step
 * of many entries) costs one query. No Node-only imports: the browser's
 * database worker and the React hooks use this file too.
 */
export interface WatchOptions {
  /** A query that fails (on its first run or later) is reported here; default: console.error. A first run that fails ends the watch. */
  onError?: (error: Error) => void;
}

/**
 * Runs the query under the replica's lock, calling `reading` there first (changes
 * from then on need another run; those before it are in these rows); with
 * `withTables`, also says which tables it reads (undefined: cannot tell).
 */
export type WatchSource = (sql: string, params: Params | undefined, withTables: boolean, reading: () => void) => Promise<{ rows: Row[]; tables?: string[] | undefined }>;

interface Watch {
  readonly sql: string;
  readonly params: Params | undefined;
  readonly callback: (rows: Row[]) => void;
  readonly onError: (error: Error) => void;
  tables: string[] | undefined;
  /** The rows last delivered; undefined before the first delivery. */
  rows: Row[] | undefined;
  dirty: boolean;
  running: boolean;
  live: boolean;
}

export class Watches {
  readonly #source: WatchSource;
  readonly #byTable = new Map<string, Set<Watch>>();
  /** Watches whose tables are not known: every change concerns them. */
  readonly #any = new Set<Watch>();

  constructor(source: WatchSource) {
    this.#source = source;
  }

  /** Live watches (a test checks that unsubscribing leaves none behind). */
  get size(): number {
    let n = this.#any.size;
    for (const set of this.#byTable.values()) n += set.size;
    return n;
  }

  add<T extends Row>(sql: string, params: Params | undefined, callback: (rows: T[]) => void, options: WatchOptions = {}): () => void {
    const w: Watch = {
      sql,
      params,
      callback: callback as (rows: Row[]) => void,
      onError: options.onError ?? ((e) => console.error("changeset-relay: a watched query failed", e)),
      tables: undefined,
      rows: undefined,
      dirty: true,
      running: false,
      live: true,
    };
    this.#any.add(w);
    void this.#run(w);
    return () => this.#remove(w);
  }

  /** A commit changed these tables. */
  changed(tables: readonly string[]): void {
    for (const w of this.#any) this.#invalidate(w);
    for (const t of tables) for (const w of this.#byTable.get(t) ?? []) this.#invalidate(w);
  }

  /** Ends every watch (the replica closed). */
  close(): void {
    for (const w of this.#any) w.live = false;
    for (const set of this.#byTable.values()) for (const w of set) w.live = false;
    this.#any.clear();
    this.#byTable.clear();
  }

  #invalidate(w: Watch): void {
    w.dirty = true;
    if (!w.running) void this.#run(w);
  }

  async #run(w: Watch): Promise<void> {
    w.running = true;
    try {
      while (w.dirty && w.live) {
        const first = w.rows === undefined;
        let result: Awaited<ReturnType<WatchSource>>;
        try {
          result = await this.#source(w.sql, w.params, first, () => (w.dirty = false));
        } catch (e) {
          if (!w.live) return;
          w.onError(e instanceof Error ? e : new Error(String(e)));
          if (first) this.#remove(w); // bad SQL stays bad: re-running it on every change would only repeat the error
          w.dirty = false;
          continue;
        }
        if (!w.live) return;
        if (first && result.tables !== undefined) this.#track(w, result.tables);
        if (!first && rowsEqual(w.rows!, result.rows)) continue;
        w.rows = result.rows;
        try {
          w.callback(result.rows);
        } catch (e) {
          console.error("changeset-relay: a watch callback threw", e);
        }
      }
    } finally {
      w.running = false;
    }
  }

  #track(w: Watch, tables: string[]): void {
    this.#any.delete(w);
    w.tables = tables;
    for (const t of tables) {
      let set = this.#byTable.get(t);
      if (!set) this.#byTable.set(t, (set = new Set()));
      set.add(w);
    }
  }

  #remove(w: Watch): void {
    w.live = false;
    this.#any.delete(w);
    for (const t of w.tables ?? []) {
      const set = this.#byTable.get(t);
      set?.delete(w);
      if (set?.size === 0) this.#byTable.delete(t);
    }
  }
}

/** Same rows, same columns, same values (blobs byte for byte): a watch's callback is skipped when a re-run returns these. */
export function rowsEqual(a: readonly Row[], b: readonly Row[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    let n = 0;
    for (const k in x) {
      if (!(k in y) || !valueEqual(x[k]!, y[k]!)) return false;
      n++;
    }
    for (const _ in y) n--;
    if (n !== 0) return false;
  }
  return true;
}

function valueEqual(x: SqlValue, y: SqlValue): boolean {
  if (x === y) return true;
  if (!(x instanceof Uint8Array) || !(y instanceof Uint8Array) || x.byteLength !== y.byteLength) return false;
  for (let i = 0; i < x.byteLength; i++) if (x[i] !== y[i]) return false;
  return true;
}
