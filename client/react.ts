/**
 * React bindings, "changeset-relay/react": hooks over a replica of either
 * entry ("changeset-relay/client" or "changeset-relay/browser"), built on
 * useSyncExternalStore. The only module of the package that imports React
 * (an optional peer dependency).
 */
import { useMemo, useSyncExternalStore } from "react";
import type { Params, Row } from "./drivers/types.ts";
import type { ReplicaEvents, ReplicaStatus } from "./types.ts";
import { rowsEqual, type WatchOptions } from "./watch.ts";

/** What the hooks need of a replica: both Replica and BrowserReplica have it. */
export interface ReactiveReplica<S extends ReplicaStatus = ReplicaStatus> {
  watch<T extends Row = Row>(sql: string, params: Params | undefined, callback: (rows: T[]) => void, options?: WatchOptions): () => void;
  status(): S;
  on<K extends keyof ReplicaEvents>(event: K, fn: (e: ReplicaEvents[K]) => void): () => void;
}

export interface QueryState<T> {
  /** The latest rows; [] while loading. */
  rows: T[];
  /** True until the first rows (or an error) arrive. */
  loading: boolean;
  /** The query's error, if its last run failed. */
  error: Error | undefined;
}

/**
 * The rows of a query, kept current with replica.watch: the component
 * re-renders when a commit changed them, and not otherwise. `T` is the
 * caller's assertion of the rows' shape. `params` are compared by value, so
 * an inline array does not restart the watch on every render.
 */
export function useQuery<T extends Row = Row>(replica: ReactiveReplica, sql: string, params?: Params): QueryState<T> {
  const key = paramsKey(params);
  // `key` stands for `params`: equal values, same watch.
  const store = useMemo(() => queryStore<T>(replica, sql, params), [replica, sql, key]);
  return useSyncExternalStore(store.subscribe, store.get, store.get);
}

/**
 * The replica's status (connected, live, pending, head, cursor, progress...),
 * re-rendering when it changes.
 */
export function useStatus<S extends ReplicaStatus>(replica: ReactiveReplica<S>): S {
  const store = useMemo(() => statusStore(replica), [replica]);
  return useSyncExternalStore(store.subscribe, store.get, store.get);
}

interface Store<T> {
  subscribe(onChange: () => void): () => void;
  get(): T;
}

function queryStore<T extends Row>(replica: ReactiveReplica, sql: string, params: Params | undefined): Store<QueryState<T>> {
  let state: QueryState<T> = { rows: [], loading: true, error: undefined };
  return {
    subscribe(onChange) {
      return replica.watch<T>(
        sql,
        params,
        (rows) => {
          // A re-subscription (StrictMode, a new owner tab) delivers equal rows again: no render for them.
          if (!state.loading && state.error === undefined && rowsEqual(state.rows, rows)) return;
          state = { rows, loading: false, error: undefined };
          onChange();
        },
        {
          onError(error) {
            state = { ...state, loading: false, error };
            onChange();
          },
        },
      );
    },
    get: () => state,
  };
}

/** Events after which the status can differ; "status" is the browser's own (its pending count, owner tab...). */
const STATUS_EVENTS = ["change", "sync", "progress", "connection", "error", "status"] as const;

function statusStore<S extends ReplicaStatus>(replica: ReactiveReplica<S>): Store<S> {
  let last: S | undefined;
  let lastJson = "";
  // The same object until something in it changes: useSyncExternalStore compares snapshots by identity.
  const get = (): S => {
    const s = replica.status();
    const json = JSON.stringify(s);
    if (json !== lastJson) {
      last = s;
      lastJson = json;
    }
    return last!;
  };
  return {
    subscribe(onChange) {
      // "status" is not a Node event: listening for it there is harmless, and keeps one hook for both entries.
      const on = replica.on.bind(replica) as (event: string, fn: () => void) => () => void;
      const offs = STATUS_EVENTS.map((event) => on(event, onChange));
      return () => offs.forEach((off) => off());
    },
    get,
  };
}

function paramsKey(params: Params | undefined): string {
  if (params === undefined) return "";
  return JSON.stringify(params, (_k, v: unknown) => (typeof v === "bigint" ? { bigint: String(v) } : v instanceof Uint8Array ? { blob: Array.from(v) } : v));
}
