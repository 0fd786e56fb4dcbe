/**
 * changeset-relay in the browser: the same openReplica() API as
 * "changeset-relay/client", backed by a dedicated Web Worker that runs the
 * replica on the official SQLite WASM build, persisted in the origin private
 * file system (opfs-sahpool VFS: no cross-origin isolation headers needed).
 * This module is a thin message-passing proxy; see worker.ts for the worker
 * and for how tabs of one origin share one database.
 */
import { RelayError } from "../errors.ts";
import type { ConflictRecord } from "../conflicts.ts";
import type { Params, Row } from "../drivers/types.ts";
import type { TokenOption } from "../token.ts";
import type { DroppedEvent, ReplicaEvents, ReplicaWarning, SyncEvent, Tx } from "../types.ts";
import { rowsEqual, type WatchOptions } from "../watch.ts";
import { fromWire, toWire, type BrowserStatus, type Method, type Outcome, type PageToWorker, type TxOp, type WireError, type WorkerOpenOptions, type WorkerToPage } from "./messages.ts";

export type { BrowserStatus, Storage } from "./messages.ts";
export type { ChangeEvent, DroppedEvent, ReplicaEvents, ReplicaWarning, SyncEvent, SyncProgress, Tx } from "../types.ts";
export type { WatchOptions } from "../watch.ts";
export type { ConflictRecord, ConflictKind, Resolution, TablePolicy } from "../conflicts.ts";
export type { Params, Row } from "../drivers/types.ts";
export { RelayError, isRelayError } from "../errors.ts";
export type { ErrorCode } from "../errors.ts";

export interface BrowserReplicaOptions extends Omit<WorkerOpenOptions, "path" | "conflicts" | "token" | "tokenFromPage"> {
  /**
   * A JWT, or a function (sync or async) returning one. The function runs
   * here in the page (it may read cookies or call the app's backend); the
   * database worker asks for a token at open, shortly before expiry and
   * after `unauthorized`.
   */
  token?: TokenOption | undefined;
  /**
   * The database file in OPFS ([A-Za-z0-9_.-], default `<db>.sqlite3`), or
   * ":memory:". Tabs that open the same file share one replica.
   */
  path?: string;
  /** Conflict policies by name; a custom onConflict function cannot cross into the worker. */
  conflicts?: WorkerOpenOptions["conflicts"] | undefined;
  /**
   * The database worker, when the bundler does not find it by itself (esbuild):
   * its URL, or a function that starts it. Default: `new URL("./worker.js", import.meta.url)`.
   */
  worker?: URL | string | (() => Worker);
}

/** The Node replica's events (same names, same payloads), and two of the browser's own. */
export interface BrowserReplicaEvents extends ReplicaEvents {
  /** Something in status() changed (pending count, cursor, connection, owner tab...). */
  status: BrowserStatus;
  /** This tab's worker took over the database from a tab that closed, or another tab did. */
  owner: { owner: boolean };
}

const PATH = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * Open (or create) a replica of `db` that lives in a Web Worker and persists
 * in OPFS. Resolves once the database is open (here or in the tab that owns it).
 *
 * @example
 * import { openReplica } from "changeset-relay/browser";
 * const replica = await openReplica({ url: location.origin, db: "todos", token, live: true,
 *   schema: ["CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER)"] });
 * replica.on("change", () => render());
 * await replica.exec("INSERT INTO todo VALUES (?, ?, 0)", [crypto.randomUUID(), "milk"]);
 */
export async function openReplica(options: BrowserReplicaOptions): Promise<BrowserReplica> {
  const { worker: spec, path: givenPath, conflicts, token, ...rest } = options;
  if ((options.conflicts as { onConflict?: unknown } | undefined)?.onConflict !== undefined) {
    throw new RelayError("bad_request", "conflicts.onConflict cannot run in the database worker: use per-table policies in the browser");
  }
  const path = givenPath ?? `${options.db}.sqlite3`;
  if (path !== ":memory:" && !PATH.test(path)) throw new RelayError("invalid_name", "path must match [A-Za-z0-9_.-]{1,128} or be \":memory:\"");
  const worker = startWorker(spec);
  const replica = new BrowserReplica(worker, typeof token === "function" ? token : undefined);
  const tokenOption = typeof token === "function" ? { tokenFromPage: true } : token === undefined ? {} : { token };
  await replica.opened({ ...rest, ...tokenOption, ...(conflicts ? { conflicts } : {}), path });
  return replica;
}

/** Watch results reach the page once per frame; a hidden page gets no frames, so there they come on the next task. */
function nextFrame(fn: () => void): void {
  if (typeof requestAnimationFrame === "function" && document.visibilityState === "visible") requestAnimationFrame(fn);
  else setTimeout(fn, 0);
}

function startWorker(spec: BrowserReplicaOptions["worker"]): Worker {
  if (typeof spec === "function") return spec();
  // The literal `new Worker(new URL(...), { type: "module" })` is what Vite,
  // webpack and Parcel recognise to bundle the worker and its .wasm.
  if (spec === undefined) return new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  return new Worker(spec, { type: "module" });
}

type Listener = (e: never) => void;

interface PageWatch {
  callback: (rows: Row[]) => void;
  onError: (e: Error) => void;
  /** The rows last delivered. */
  rows: Row[] | undefined;
}

export class BrowserReplica {
  #worker: Worker;
  #status: BrowserStatus | undefined;
  #nextId = 1;
  #calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  #listeners = new Map<keyof BrowserReplicaEvents, Set<Listener>>();
  /** Warnings (and values dropped at open) come as the database opens, usually before anyone listens: kept for late listeners. */
  #atOpen: { warning: ReplicaWarning[]; dropped: DroppedEvent[] } = { warning: [], dropped: [] };
  #open: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  #closed: Promise<void> | undefined;
  #closedResolve: (() => void) | undefined;
  #tokenFn: (() => string | Promise<string>) | undefined;
  #watches = new Map<number, PageWatch>();
  #nextWatch = 1;
  /** Rows that arrived since the last animation frame, by watch: only the latest of each is delivered. */
  #arrived = new Map<number, Row[]>();
  #frame = false;
  /** Milliseconds from starting the worker to an open database (OPFS install included). */
  openMs = 0;

  /** Use `openReplica`. */
  constructor(worker: Worker, tokenFn?: () => string | Promise<string>) {
    this.#worker = worker;
    this.#tokenFn = tokenFn;
    worker.addEventListener("message", (e: MessageEvent<WorkerToPage>) => this.#onMessage(e.data));
    worker.addEventListener("error", (e: ErrorEvent) => {
      const err = new RelayError("internal", `database worker failed: ${e.message || "could not load it (is the worker URL served?)"}`);
      this.#open?.reject(err);
      for (const c of this.#calls.values()) c.reject(err);
      this.#calls.clear();
    });
  }

  /** @internal */
  opened(options: WorkerOpenOptions): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#open = { resolve, reject };
      this.#post({ t: "open", options });
    }).catch((e: unknown) => {
      this.#worker.terminate();
      throw e;
    });
  }

  get clientId(): string {
    return this.status().clientId;
  }

  /** Run one write transaction; it becomes one changeset. */
  exec(sql: string, params?: Params): Promise<{ changes: number }> {
    return this.#call("exec", params === undefined ? [sql] : [sql, params]) as Promise<{ changes: number }>;
  }

  /** Read with SQL; rows as plain objects. Sees pending local writes. */
  query<T extends Row = Row>(sql: string, params?: Params): Promise<T[]> {
    return this.#call("query", params === undefined ? [sql] : [sql, params]) as Promise<T[]>;
  }

  /**
   * Call back with the query's rows at once, then again whenever a commit
   * (local, remote, another tab's) changed them. The query runs in the
   * database worker, re-run there only after commits to the tables it reads;
   * only rows that differ cross to the page, and the callback runs at most
   * once per animation frame. `T` is the caller's assertion of the rows'
   * shape. Returns the function that ends the watch.
   */
  watch<T extends Row = Row>(sql: string, params: Params | undefined, callback: (rows: T[]) => void, options: WatchOptions = {}): () => void {
    if (this.#closed) throw new RelayError("closed", "replica is closed");
    const id = this.#nextWatch++;
    this.#watches.set(id, {
      callback: callback as (rows: Row[]) => void,
      onError: options.onError ?? ((e) => console.error("changeset-relay: a watched query failed", e)),
      rows: undefined,
    });
    this.#post({ t: "watch", id, sql, params });
    return () => {
      this.#arrived.delete(id);
      if (this.#watches.delete(id) && !this.#closed) this.#post({ t: "unwatch", id });
    };
  }

  /**
   * Several statements as one transaction, one changeset. The database is
   * locked for other writers (this tab's and the other tabs') until `fn`
   * settles, so keep it short. The worker runs the statements: tx calls
   * issued in one turn (without awaiting each) travel as one message and
   * run in order, each resolving or rejecting on its own; awaiting each
   * call costs a round trip per call.
   */
  async transaction<T>(fn: (tx: Tx) => Promise<T> | T): Promise<T> {
    const id = (await this.#call("txBegin", [])) as string;
    let done = false;
    /** Calls of this turn, sent together at its end. */
    let batch: { op: TxOp; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
    const send = () => {
      const calls = batch;
      batch = [];
      if (calls.length === 1) {
        const [kind, sql, params] = calls[0]!.op;
        const method = kind === "exec" ? "txExec" : "txQuery";
        this.#call(method, params === undefined ? [id, sql] : [id, sql, params]).then(calls[0]!.resolve, calls[0]!.reject);
        return;
      }
      this.#call("txBatch", [id, calls.map((c) => c.op)]).then(
        (outcomes) => {
          // An owner tab running an older version answers undefined to a method it does not know.
          if (!Array.isArray(outcomes)) throw new RelayError("internal", "the tab that owns the database runs an older changeset-relay: reload it");
          (outcomes as Outcome[]).forEach((o, i) => (o.ok ? calls[i]!.resolve(o.value) : calls[i]!.reject(fromWire(o.error))));
        },
      ).catch((e: unknown) => calls.forEach((c) => c.reject(e)));
    };
    const queue = (op: TxOp): Promise<unknown> => {
      if (done) return Promise.reject(new RelayError("closed", "transaction already finished"));
      if (batch.length === 0) queueMicrotask(send);
      return new Promise((resolve, reject) => batch.push({ op, resolve, reject }));
    };
    const tx: Tx = {
      exec: (sql, params) => queue(params === undefined ? ["exec", sql] : ["exec", sql, params]) as Promise<{ changes: number }>,
      query: <R extends Row>(sql: string, params?: Params) => queue(params === undefined ? ["query", sql] : ["query", sql, params]) as Promise<R[]>,
    };
    let result: T;
    try {
      result = await fn(tx);
    } catch (e) {
      done = true;
      await this.#call("txEnd", [id, false]).catch(() => undefined);
      throw e;
    }
    done = true;
    await this.#call("txEnd", [id, true]);
    return result;
  }

  /** Push everything pending, pull to the head of the log, rebase. */
  sync(): Promise<SyncEvent> {
    return this.#call("sync", []) as Promise<SyncEvent>;
  }

  /**
   * Live sync on or off (off: an "offline" switch; writes keep queueing).
   * The replica is shared by the origin's tabs, so this switches it for all of them.
   */
  async setLive(enabled: boolean): Promise<void> {
    await this.#call("setLive", [enabled]);
  }

  /** Drop the write the relay refused for good (status().blocked); see the Node client's discardBlocked. */
  discardBlocked(): Promise<number | null> {
    return this.#call("discardBlocked", []) as Promise<number | null>;
  }

  /** The last status the worker reported: updated with every result and event. */
  status(): BrowserStatus {
    if (!this.#status) throw new RelayError("closed", "replica is not open");
    return this.#status;
  }

  /** Conflicts recorded so far, oldest first. */
  conflicts(): Promise<ConflictRecord[]> {
    return this.#call("conflicts", []) as Promise<ConflictRecord[]>;
  }

  on<K extends keyof BrowserReplicaEvents>(event: K, fn: (e: BrowserReplicaEvents[K]) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn as Listener);
    if (event === "warning" || event === "dropped") for (const x of this.#atOpen[event as "warning" | "dropped"]) queueMicrotask(() => (fn as (e: unknown) => void)(x));
    return () => set.delete(fn as Listener);
  }

  /** Close the database (or leave it to the other tabs) and stop the worker. */
  close(): Promise<void> {
    this.#watches.clear();
    this.#closed ??= new Promise<void>((resolve) => {
      this.#closedResolve = resolve;
      this.#post({ t: "close" });
      // A worker that cannot answer any more is stopped all the same.
      setTimeout(resolve, 5000);
    }).then(() => this.#worker.terminate());
    return this.#closed;
  }

  #call(method: Method, args: unknown[]): Promise<unknown> {
    if (this.#closed) return Promise.reject(new RelayError("closed", "replica is closed"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
      this.#post({ t: "call", id, method, args });
    });
  }

  #post(m: PageToWorker): void {
    this.#worker.postMessage(m);
  }

  #onMessage(m: WorkerToPage): void {
    switch (m.t) {
      case "opened":
        this.#status = m.status;
        this.openMs = m.openMs;
        this.#open?.resolve();
        this.#open = undefined;
        return;
      case "open-failed":
        this.#open?.reject(fromWire(m.error));
        this.#open = undefined;
        return;
      case "result": {
        if (m.status) this.#setStatus(m.status);
        const c = this.#calls.get(m.id);
        if (!c) return;
        this.#calls.delete(m.id);
        if (m.ok) c.resolve(m.value);
        else c.reject(fromWire(m.error));
        return;
      }
      case "event":
        if (m.name === "warning") this.#atOpen.warning.push(m.payload as ReplicaWarning);
        if (m.name === "dropped" && !this.#status) this.#atOpen.dropped.push(m.payload as DroppedEvent);
        if (!this.#status) return; // before open: the opened message carries the state
        this.#setStatus(m.status);
        if (m.name === "status") return;
        this.#emit(m.name, m.name === "error" ? fromWire(m.payload as WireError) : m.payload);
        return;
      case "watched": {
        const w = this.#watches.get(m.id);
        if (!w) return;
        if ("error" in m.result) return w.onError(fromWire(m.result.error));
        this.#arrived.set(m.id, m.result.rows);
        if (!this.#frame) {
          this.#frame = true;
          nextFrame(() => this.#deliver());
        }
        return;
      }
      case "warn":
        console.warn(m.message);
        return;
      case "token-request":
        this.#giveToken(m.id);
        return;
      case "closed":
        this.#closedResolve?.();
        return;
    }
  }

  async #giveToken(id: number): Promise<void> {
    try {
      if (!this.#tokenFn) throw new RelayError("unauthorized", "this page has no token function");
      this.#post({ t: "token", id, ok: true, token: await this.#tokenFn() });
    } catch (e) {
      this.#post({ t: "token", id, ok: false, error: toWire(e) });
    }
  }

  #deliver(): void {
    this.#frame = false;
    const arrived = this.#arrived;
    this.#arrived = new Map();
    for (const [id, rows] of arrived) {
      const w = this.#watches.get(id);
      // Equal rows come again when a new owner tab starts the watches over.
      if (!w || (w.rows !== undefined && rowsEqual(w.rows, rows))) continue;
      w.rows = rows;
      try {
        w.callback(rows);
      } catch (e) {
        console.error("changeset-relay: a watch callback threw", e);
      }
    }
  }

  #setStatus(s: BrowserStatus): void {
    const changed = JSON.stringify(s) !== JSON.stringify(this.#status);
    this.#status = s;
    if (changed) this.#emit("status", s);
  }

  #emit(event: keyof BrowserReplicaEvents, payload: unknown): void {
    for (const fn of this.#listeners.get(event) ?? []) {
      try {
        (fn as (e: unknown) => void)(payload);
      } catch (e) {
        console.error(`changeset-relay: a "${String(event)}" listener threw`, e);
      }
    }
  }
}
