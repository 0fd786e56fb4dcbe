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
 * Coalescing: a change only marks a watch stale; one turn of the replica's
 * lock re-runs every stale watch, serving every change committed before it,
 * so a burst of commits (or one sync step of many entries) costs one query
 * per watch and one turn of the lock in all. No Node-only imports: the browser's
 * database worker and the React hooks use this file too.
 */
export interface WatchOptions {
  /** A query that fails (on its first run or later) is reported here; default: console.error. A first run that fails ends the watch. */
  onError?: (error: Error) => void;
}

/** One query: its rows, and with `withTables` the tables it reads (undefined: this SQLite cannot tell). Throws SQLite's error. */
export type WatchRead = (sql: string, params: Params | undefined, withTables: boolean) => { rows: Row[]; tables: string[] | undefined };

/** Runs `fn` under the replica's lock (after what is queued on it), with the way to read there. */
export type WatchSource = (fn: (read: WatchRead) => void) => Promise<void>;

interface Watch {
  readonly sql: string;
  readonly params: Params | undefined;
  readonly callback: (rows: Row[]) => void;
  readonly onError: (error: Error) => void;
  tables: string[] | undefined;
  /** Ask SQLite for the tables on the next run: the first, and the first after a schema change (a view may read others now). */
  learn: boolean;
  /** The rows last delivered; undefined before the first delivery. */
  rows: Row[] | undefined;
  live: boolean;
}

type Outcome = { rows: Row[]; tables: string[] | undefined } | { error: unknown };

export class Watches {
  readonly #source: WatchSource;
  readonly #byTable = new Map<string, Set<Watch>>();
  /** Watches whose tables are not known: every change concerns them. */
  readonly #any = new Set<Watch>();
  /** Watches to re-run in the next batch. */
  #stale = new Set<Watch>();
  #scheduled = false;

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
      learn: true,
      rows: undefined,
      live: true,
    };
    this.#any.add(w);
    this.#invalidate(w);
    return () => this.#remove(w);
  }

  /** A commit changed these tables; `schema`: it changed the schema too, so every watch learns its tables again. */
  changed(tables: readonly string[], schema = false): void {
    if (schema) {
      for (const set of [...this.#byTable.values()]) for (const w of set) this.#untrack(w);
      for (const w of this.#any) w.learn = true;
    }
    for (const w of this.#any) this.#invalidate(w);
    for (const t of tables) for (const w of this.#byTable.get(t) ?? []) this.#invalidate(w);
  }

  /** Ends every watch (the replica closed). */
  close(): void {
    for (const w of this.#any) w.live = false;
    for (const set of this.#byTable.values()) for (const w of set) w.live = false;
    this.#any.clear();
    this.#byTable.clear();
    this.#stale.clear();
  }

  /**
   * Marks `w` for the next batch: one turn of the lock re-runs every stale
   * watch. The batch is taken inside the lock, so a change committed before
   * it is in its rows, and one committed after marks the watch again.
   */
  #invalidate(w: Watch): void {
    this.#stale.add(w);
    if (this.#scheduled) return;
    this.#scheduled = true;
    const outcomes: [Watch, Outcome][] = [];
    this.#source((read) => {
      this.#scheduled = false;
      const batch = this.#stale;
      this.#stale = new Set();
      for (const w of batch) {
        if (!w.live) continue;
        try {
          outcomes.push([w, read(w.sql, w.params, w.learn)]);
        } catch (error) {
          outcomes.push([w, { error }]);
        }
      }
    }).then(
      () => this.#deliver(outcomes),
      () => (this.#scheduled = false), // closed meanwhile: close() ended the watches
    );
  }

  #deliver(outcomes: readonly [Watch, Outcome][]): void {
    for (const [w, outcome] of outcomes) {
      if (!w.live) continue;
      const first = w.rows === undefined;
      if ("error" in outcome) {
        const e = outcome.error;
        w.onError(e instanceof Error ? e : new Error(String(e)));
        if (first) this.#remove(w); // bad SQL stays bad: re-running it on every change would only repeat the error
        continue;
      }
      if (w.learn) {
        w.learn = false;
        if (outcome.tables !== undefined) this.#track(w, outcome.tables);
      }
      if (!first && rowsEqual(w.rows!, outcome.rows)) continue;
      w.rows = outcome.rows;
      try {
        w.callback(outcome.rows);
      } catch (e) {
        console.error("changeset-relay: a watch callback threw", e);
      }
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
    this.#stale.delete(w);
    this.#untrack(w);
    this.#any.delete(w);
  }

  /** Back among the watches whose tables are not known. */
  #untrack(w: Watch): void {
    for (const t of w.tables ?? []) {
      const set = this.#byTable.get(t);
      set?.delete(w);
      if (set?.size === 0) this.#byTable.delete(t);
    }
    w.tables = undefined;
    w.learn = true;
    this.#any.add(w);
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
