/**
 * The database worker: one per openReplica() in a page. Bundlers pick it up
 * from `new Worker(new URL("./worker.js", import.meta.url))` in index.ts;
 * esbuild users add it as an entry point ("changeset-relay/browser/worker").
 *
 * Tabs of one origin that open the same database elect an owner with a Web
 * Lock named after the database file. The owner's worker opens it (OPFS
 * sync access handles are exclusive: two workers on one pool would corrupt
 * or fail) and runs the replica; every other tab's worker forwards its
 * page's calls over a BroadcastChannel and relays the owner's events back.
 * When the owner tab closes its lock is released, the next tab in the lock's
 * queue opens the database and announces itself, and calls that were in
 * flight to the old owner fail with `network` (their outcome is unknown).
 *
 *   waiting ──lock granted──▶ opening ──▶ owner ──page closes──▶ (lock released)
 *      │
 *      └──"owner" heard──▶ follower ──lock granted (owner gone)──▶ opening ...
 */
import { RelayError } from "../errors.ts";
import type { Params } from "../drivers/types.ts";
import { Host } from "./host.ts";
import {
  channelName,
  fromWire,
  KEEPS_STATUS,
  toWire,
  type BrowserStatus,
  type EventName,
  type Method,
  type PageToWorker,
  type Peer,
  type SharedStatus,
  type WorkerOpenOptions,
  type WorkerToPage,
} from "./messages.ts";

interface WorkerScope {
  postMessage(m: WorkerToPage): void;
  addEventListener(type: "message", fn: (e: MessageEvent<PageToWorker>) => void): void;
  close(): void;
}
const scope = globalThis as unknown as WorkerScope;

const tabId = randomId();
let options: WorkerOpenOptions | undefined;
let host: Host | undefined;
let channel: BroadcastChannel | undefined;
let owner: string | undefined;
let ownerStatus: SharedStatus | undefined;
let opened = false;
let closing = false;
const openedAt = performance.now();
/** Held until this worker closes: releasing it hands the database to the next tab. */
let releaseOwnerLock: (() => void) | undefined;
let releaseTabLock: (() => void) | undefined;

/** Calls forwarded to the owner: sent ones wait for its answer, the rest for an owner. */
const forwarded = new Map<number, { method: Method; args: unknown[]; sentTo: string | undefined }>();

/** This page's watches, kept to start them again at each new owner. */
const watches = new Map<number, { sql: string; params: Params | undefined }>();

const post = (m: WorkerToPage) => scope.postMessage(m);

function pageStatus(s: SharedStatus): BrowserStatus {
  return { ...s, owner: host !== undefined };
}

scope.addEventListener("message", (e) => {
  const m = e.data;
  switch (m.t) {
    case "open":
      if (options) return;
      options = m.options;
      start(m.options).catch((err: unknown) => post({ t: "open-failed", error: toWire(err) }));
      return;
    case "call":
      call(m.id, m.method, m.args);
      return;
    case "token": {
      const waiting = tokenRequests.get(m.id);
      tokenRequests.delete(m.id);
      if (m.ok) waiting?.resolve(m.token);
      else waiting?.reject(fromWire(m.error));
      return;
    }
    case "watch":
      watches.set(m.id, { sql: m.sql, params: m.params });
      startWatch(m.id);
      return;
    case "unwatch":
      watches.delete(m.id);
      if (host) host.unwatch(tabId, m.id);
      else if (owner !== undefined) channel?.postMessage({ t: "unwatch", from: tabId, id: m.id } satisfies Peer);
      return;
    case "close":
      close().finally(() => post({ t: "closed" }));
      return;
  }
});

/** Token requests to this worker's page, by id: the app's token function runs in the page, not here. */
const tokenRequests = new Map<number, { resolve: (t: string) => void; reject: (e: unknown) => void }>();
let nextTokenRequest = 1;
function tokenFromPage(): Promise<string> {
  const id = nextTokenRequest++;
  return new Promise((resolve, reject) => {
    tokenRequests.set(id, { resolve, reject });
    post({ t: "token-request", id });
  });
}

async function start(opts: WorkerOpenOptions): Promise<void> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks || typeof BroadcastChannel === "undefined" || opts.path === ":memory:") {
    // No Web Locks (an insecure context): nothing to coordinate tabs with, so
    // each tab keeps its own replica, in memory.
    if (opts.path !== ":memory:" && opts.storage !== "memory") {
      post({ t: "warn", message: "changeset-relay: Web Locks are not available (not a secure context?): this tab's replica is not shared with other tabs" });
    }
    await becomeOwner(opts);
    return;
  }
  const key = channelName(opts.db, opts.path);
  // This tab's liveness, for the owner: its lock is granted to the owner only once this worker is gone.
  await new Promise<void>((held) => {
    locks.request(`${key}:tab:${tabId}`, () => new Promise<void>((release) => ((releaseTabLock = release), held())));
  });
  channel = new BroadcastChannel(key);
  channel.onmessage = (e: MessageEvent<Peer>) => onPeer(e.data);
  channel.postMessage({ t: "hello", from: tabId } satisfies Peer);
  await new Promise<void>((resolve, reject) => {
    locks
      .request(key, async () => {
        if (closing) return;
        try {
          await becomeOwner(opts);
        } catch (e) {
          if (opened && ownerStatus) post({ t: "event", name: "error", payload: toWire(e), status: pageStatus(ownerStatus) });
          reject(e);
          return; // let another tab try
        }
        resolve();
        await new Promise<void>((release) => (releaseOwnerLock = release));
      })
      .catch(reject);
    // Or a follower: resolved by onPeer when an owner announces itself.
    waitForOwner = resolve;
  });
}

let waitForOwner: (() => void) | undefined;

async function becomeOwner(opts: WorkerOpenOptions): Promise<void> {
  let h: Host | undefined;
  h = await Host.open(opts, opts.tokenFromPage ? tokenFromPage : undefined, {
    emit: (name, payload) => {
      if (!h) return; // the state at open is in the "opened" message
      const status = h.status();
      post({ t: "event", name, payload, status: { ...status, owner: true } });
      channel?.postMessage({ t: "event", name, payload, status } satisfies Peer);
    },
    warn: (message) => post({ t: "warn", message }),
    watched: (origin, id, result) => {
      if (origin === tabId) post({ t: "watched", id, result });
      else channel?.postMessage({ t: "watched", to: origin, id, result } satisfies Peer);
    },
  });
  host = h;
  owner = tabId;
  const status = h.status();
  ownerStatus = status;
  channel?.postMessage({ t: "owner", owner: tabId, status } satisfies Peer);
  if (!opened) {
    opened = true;
    post({ t: "opened", status: { ...status, owner: true }, openMs: Math.round(performance.now() - openedAt) });
  } else {
    post({ t: "event", name: "owner", payload: { owner: true }, status: { ...status, owner: true } });
  }
  // Watches that ran at the previous owner died with it.
  for (const id of watches.keys()) startWatch(id);
  // Calls sent to the previous owner died with it; the unsent ones run here now.
  for (const [id, f] of forwarded) {
    forwarded.delete(id);
    if (f.sentTo !== undefined) fail(id, lostOwner());
    else call(id, f.method, f.args);
  }
}

function onPeer(m: Peer): void {
  if (closing) return;
  switch (m.t) {
    case "hello":
      if (host) channel?.postMessage({ t: "owner", owner: tabId, status: host.status() } satisfies Peer);
      return;
    case "owner": {
      if (host || m.owner === owner) return;
      const changed = owner !== undefined;
      owner = m.owner;
      ownerStatus = m.status;
      for (const [id, f] of forwarded) {
        if (f.sentTo !== undefined && f.sentTo !== m.owner) {
          forwarded.delete(id);
          fail(id, lostOwner());
        } else if (f.sentTo === undefined) {
          f.sentTo = m.owner;
          channel?.postMessage({ t: "req", from: tabId, id, method: f.method, args: f.args } satisfies Peer);
        }
      }
      for (const id of watches.keys()) startWatch(id);
      if (!opened) {
        opened = true;
        post({ t: "opened", status: pageStatus(m.status), openMs: Math.round(performance.now() - openedAt) });
        waitForOwner?.();
      } else if (changed) {
        post({ t: "event", name: "owner", payload: { owner: false }, status: pageStatus(m.status) });
      }
      return;
    }
    case "req": {
      const h = host;
      if (!h) return;
      watchTab(m.from);
      const status = () => (KEEPS_STATUS.has(m.method) ? undefined : h.status());
      h.handle(m.method, m.args, m.from).then(
        (value) => channel?.postMessage({ t: "res", to: m.from, id: m.id, ok: true, value, status: status() } satisfies Peer),
        (e: unknown) => channel?.postMessage({ t: "res", to: m.from, id: m.id, ok: false, error: toWire(e), status: status() } satisfies Peer),
      );
      return;
    }
    case "res": {
      if (m.to !== tabId || !forwarded.delete(m.id)) return;
      if (m.status) ownerStatus = m.status;
      const status = m.status && pageStatus(m.status);
      post(m.ok ? { t: "result", id: m.id, ok: true, value: m.value, status } : { t: "result", id: m.id, ok: false, error: m.error, status });
      return;
    }
    case "event":
      if (host) return;
      ownerStatus = m.status;
      post({ t: "event", name: m.name as EventName, payload: m.payload, status: pageStatus(m.status) });
      return;
    case "watch":
      if (!host) return;
      watchTab(m.from);
      host.watch(m.from, m.id, m.sql, m.params);
      return;
    case "unwatch":
      host?.unwatch(m.from, m.id);
      return;
    case "watched":
      if (m.to === tabId && watches.has(m.id)) post({ t: "watched", id: m.id, result: m.result });
      return;
  }
}

/** Run watch `id` where the database is: here when this tab owns it, else at the owner (again at each new one). */
function startWatch(id: number): void {
  const w = watches.get(id);
  if (!w || closing) return;
  if (host) host.watch(tabId, id, w.sql, w.params);
  else if (owner !== undefined) channel?.postMessage({ t: "watch", from: tabId, id, sql: w.sql, params: w.params } satisfies Peer);
}

function call(id: number, method: Method, args: unknown[]): void {
  if (closing) return fail(id, new RelayError("closed", "replica is closed"));
  if (host) {
    const h = host;
    const keeps = KEEPS_STATUS.has(method);
    h.handle(method, args, tabId).then(
      (value) => post({ t: "result", id, ok: true, value, status: keeps ? undefined : pageStatus(h.status()) }),
      (e: unknown) => post({ t: "result", id, ok: false, error: toWire(e), status: keeps ? undefined : safeStatus(h) }),
    );
    return;
  }
  const sentTo = owner;
  forwarded.set(id, { method, args, sentTo });
  if (sentTo !== undefined) channel?.postMessage({ t: "req", from: tabId, id, method, args } satisfies Peer);
}

/** Roll back a follower tab's open transactions once it is gone (its tab lock comes free). */
const watched = new Set<string>();
function watchTab(tab: string): void {
  if (watched.has(tab) || !options) return;
  watched.add(tab);
  const locks = navigator.locks;
  locks
    .request(`${channelName(options.db, options.path)}:tab:${tab}`, () => {
      watched.delete(tab);
      host?.abandon(tab);
    })
    .catch(() => undefined);
}

function fail(id: number, e: unknown): void {
  post({ t: "result", id, ok: false, error: toWire(e), status: ownerStatus && pageStatus(ownerStatus) });
}

function safeStatus(h: Host): BrowserStatus | undefined {
  try {
    return pageStatus(h.status());
  } catch {
    return undefined;
  }
}

function lostOwner(): RelayError {
  return new RelayError("network", "the tab that had the database open went away during this call; its outcome is unknown");
}

async function close(): Promise<void> {
  if (closing) return;
  closing = true;
  for (const [id] of forwarded) fail(id, new RelayError("closed", "replica is closed"));
  forwarded.clear();
  try {
    await host?.close();
  } finally {
    host = undefined;
    channel?.close();
    releaseOwnerLock?.();
    releaseTabLock?.();
  }
}

function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
}
