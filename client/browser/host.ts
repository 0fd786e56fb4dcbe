/**
 * The owner side: the one worker of an origin that has the database open.
 * It runs the real Replica (client/replica.ts, wasm driver, OPFS) and serves
 * calls from its own page and from the other tabs' workers alike; nothing of
 * the sync logic is repeated here.
 */
import { RelayError } from "../errors.ts";
import { installOpfsSahPool, loadSqliteWasm } from "../drivers/wasm.ts";
import { openReplica } from "../open.ts";
import type { Replica } from "../replica.ts";
import type { ReplicaEvents, Tx } from "../types.ts";
import type { Params } from "../drivers/types.ts";
import { toWire, type CallArgs, type EventName, type Method, type Outcome, type SharedStatus, type Storage, type TxOp, type Watched, type WorkerOpenOptions } from "./messages.ts";

const FORWARDED: readonly (keyof ReplicaEvents & EventName)[] = ["change", "sync", "progress", "conflict", "error", "connection", "warning", "dropped"];
/** Status changes without an event (an own entry confirmed by the socket, say) still reach the pages within this. */
const STATUS_POLL_MS = 250;

export interface HostEvents {
  emit(name: EventName, payload: unknown): void;
  /** News of watch `id` of tab `origin`. */
  watched(origin: string, id: number, result: Watched): void;
  warn(message: string): void;
}

/** One interactive transaction driven from a page, op by op. */
interface TxSession {
  origin: string;
  run(op: (tx: Tx) => Promise<unknown>): Promise<unknown>;
  end(commit: boolean): Promise<void>;
}

class Rollback extends Error {}

/** The calls of a txBatch one after the other, each settling on its own as separate messages would: a failed one does not stop the rest. */
async function runBatch(tx: Tx, ops: TxOp[]): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (const [kind, sql, params] of ops) {
    try {
      out.push({ ok: true, value: kind === "exec" ? await tx.exec(sql, params) : await tx.query(sql, params) });
    } catch (e) {
      out.push({ ok: false, error: toWire(e) });
    }
  }
  return out;
}

export class Host {
  readonly storage: Storage;
  private readonly replica: Replica;
  private readonly out: HostEvents;
  private readonly txs = new Map<string, TxSession>();
  /** Every tab's watches, by `${origin}:${id}`: the replica runs them (replica.watch), whichever tab asked. */
  private readonly watches = new Map<string, { origin: string; stop: () => void }>();
  private readonly poll: ReturnType<typeof setInterval>;
  private lastStatus = "";
  private nextTx = 1;
  private closed = false;

  private constructor(replica: Replica, storage: Storage, out: HostEvents) {
    this.replica = replica;
    this.storage = storage;
    this.out = out;
    for (const name of FORWARDED) {
      replica.on(name, (payload) => {
        this.out.emit(name, name === "error" ? toWire(payload) : payload);
        this.statusChanged();
      });
    }
    this.poll = setInterval(() => this.statusChanged(), STATUS_POLL_MS);
  }

  /** Open the database: OPFS when this browser has it, else memory with a warning. */
  static async open(opts: WorkerOpenOptions, token: (() => Promise<string>) | undefined, out: HostEvents): Promise<Host> {
    // First, and whatever the storage: the one place the .wasm location is given.
    await loadSqliteWasm(opts.wasmUrl ? { wasmUrl: opts.wasmUrl } : {});
    let path = opts.path;
    let storage: Storage = "memory";
    if (opts.storage !== "memory" && path !== ":memory:") {
      try {
        await installOpfsSahPool({ directory: `.changeset-relay/${path}` });
        storage = "opfs";
      } catch (e) {
        path = ":memory:";
        out.warn(
          `changeset-relay: OPFS is not available here (${(e as Error)?.message ?? e}); ` +
            `database "${opts.db}" is kept in memory and its unsynced writes are lost when the tab closes.`,
        );
      }
    } else {
      path = ":memory:";
    }
    const { wasmUrl: _wasmUrl, storage: _storage, tokenFromPage: _fromPage, ...rest } = opts;
    const replica = await openReplica({ ...rest, ...(token ? { token } : {}), path, driver: "wasm" });
    return new Host(replica, storage, out);
  }

  status(): SharedStatus {
    const s = this.replica.status();
    return { ...s, storage: this.storage, persistent: this.storage === "opfs" };
  }

  /** Run one call from tab `origin`. */
  async handle(method: Method, args: unknown[], origin: string): Promise<unknown> {
    if (this.closed) throw new RelayError("closed", "replica is closed");
    switch (method) {
      case "exec": {
        const [sql, params] = args as CallArgs["exec"];
        return this.replica.exec(sql, params);
      }
      case "query": {
        const [sql, params] = args as CallArgs["query"];
        return this.replica.query(sql, params);
      }
      case "sync":
        return this.replica.sync();
      case "conflicts":
        return this.replica.conflicts();
      case "setLive": {
        const [enabled] = args as CallArgs["setLive"];
        this.replica.setLive(enabled);
        this.statusChanged();
        return undefined;
      }
      case "discardBlocked":
        return this.replica.discardBlocked();
      case "status":
        return this.status();
      case "txBegin":
        return this.begin(origin);
      case "txExec": {
        const [id, sql, params] = args as CallArgs["txExec"];
        return this.tx(id, origin).run((tx) => tx.exec(sql, params as Params));
      }
      case "txQuery": {
        const [id, sql, params] = args as CallArgs["txQuery"];
        return this.tx(id, origin).run((tx) => tx.query(sql, params as Params));
      }
      case "txBatch": {
        const [id, ops] = args as CallArgs["txBatch"];
        return this.tx(id, origin).run((tx) => runBatch(tx, ops));
      }
      case "txEnd": {
        const [id, commit] = args as CallArgs["txEnd"];
        const session = this.tx(id, origin);
        this.txs.delete(id);
        return session.end(commit);
      }
    }
  }

  /** Start (or start again, for a new owner) watch `id` of tab `origin`. */
  watch(origin: string, id: number, sql: string, params: Params | undefined): void {
    if (this.closed) return;
    this.unwatch(origin, id);
    const report = (result: Watched) => this.out.watched(origin, id, result);
    const stop = this.replica.watch(sql, params, (rows) => report({ rows }), { onError: (e) => report({ error: toWire(e) }) });
    this.watches.set(`${origin}:${id}`, { origin, stop });
  }

  unwatch(origin: string, id: number): void {
    const key = `${origin}:${id}`;
    this.watches.get(key)?.stop();
    this.watches.delete(key);
  }

  /** A tab went away: roll back what it left open, end its watches. */
  abandon(origin: string): void {
    for (const [key, w] of this.watches) {
      if (w.origin !== origin) continue;
      w.stop();
      this.watches.delete(key);
    }
    for (const [id, s] of this.txs) {
      if (s.origin !== origin) continue;
      this.txs.delete(id);
      s.end(false).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.poll);
    this.watches.clear(); // the replica's close ends them
    for (const id of [...this.txs.keys()]) this.txs.get(id)?.end(false).catch(() => undefined);
    this.txs.clear();
    await this.replica.close();
  }

  private tx(id: string, origin: string): TxSession {
    const s = this.txs.get(id);
    if (!s || s.origin !== origin) throw new RelayError("closed", "transaction already finished");
    return s;
  }

  /**
   * Starts replica.transaction() with a body that waits for the page's ops:
   * the replica's own capture/outbox/commit logic runs unchanged. Resolves the
   * transaction's id once BEGIN has run.
   */
  private begin(origin: string): Promise<string> {
    const id = `${origin}:${this.nextTx++}`;
    const queue: { op: (tx: Tx) => Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
    let wake: (() => void) | undefined;
    let ending: { commit: boolean } | undefined;
    let started!: () => void;
    const startedP = new Promise<void>((r) => (started = r));
    const done = this.replica
      .transaction(async (tx) => {
        started();
        for (;;) {
          const next = queue.shift();
          if (next) {
            try {
              next.resolve(await next.op(tx));
            } catch (e) {
              next.reject(e);
            }
            continue;
          }
          if (ending) {
            if (!ending.commit) throw new Rollback();
            return;
          }
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      })
      .catch((e: unknown) => {
        if (!(e instanceof Rollback)) throw e;
      });
    const session: TxSession = {
      origin,
      run: (op) =>
        new Promise((resolve, reject) => {
          if (ending) return reject(new RelayError("closed", "transaction already finished"));
          queue.push({ op, resolve, reject });
          wake?.();
        }),
      end: (commit) => {
        ending ??= { commit };
        wake?.();
        return done;
      },
    };
    this.txs.set(id, session);
    return new Promise<string>((resolve, reject) => {
      startedP.then(() => resolve(id));
      // Before BEGIN (read-only replica, closed) this rejects txBegin; after it,
      // txEnd reports the outcome (this late reject is then a no-op).
      done.then(
        () => this.txs.delete(id),
        (e: unknown) => {
          this.txs.delete(id);
          reject(e);
        },
      );
    });
  }

  private statusChanged(): void {
    if (this.closed) return;
    let s: SharedStatus;
    try {
      s = this.status();
    } catch {
      return; // closing
    }
    const json = JSON.stringify(s);
    if (json === this.lastStatus) return;
    this.lastStatus = json;
    this.out.emit("status", null);
  }
}
