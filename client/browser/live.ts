/**
 * The owner's switch for continuous sync. It uses the replica's own live
 * sync (setLive: one WebSocket) and, on a replica built without it, polls
 * with sync() instead, so the page-side API is the same either way.
 */
import type { Replica } from "../replica.ts";

/** Polling fallback: how often to pull when nothing happens locally. */
const POLL_MS = 1000;

export interface LiveControl {
  readonly enabled: boolean;
  set(enabled: boolean): void;
  /** The replica's own `connected`, or the poller's view of it. */
  connected(fromReplica: boolean): boolean;
  onConnection(fn: (connected: boolean) => void): void;
  stop(): void;
}

interface LiveReplica {
  setLive(enabled: boolean): void;
}

function hasLive(r: Replica): r is Replica & LiveReplica {
  return typeof (r as Partial<LiveReplica>).setLive === "function";
}

export function liveControl(replica: Replica, initial: boolean): LiveControl {
  return hasLive(replica) ? native(replica, initial) : polling(replica, initial);
}

function native(replica: Replica & LiveReplica, initial: boolean): LiveControl {
  let enabled = false;
  const control: LiveControl = {
    get enabled() {
      return enabled;
    },
    set(on) {
      if (on === enabled) return;
      enabled = on;
      replica.setLive(on);
    },
    connected: (fromReplica) => fromReplica,
    // The replica emits "connection" itself.
    onConnection: () => undefined,
    stop: () => {
      if (enabled) replica.setLive(false);
      enabled = false;
    },
  };
  control.set(initial);
  return control;
}

function polling(replica: Replica, initial: boolean): LiveControl {
  let enabled = false;
  let connected = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  let again = false;
  const listeners: ((c: boolean) => void)[] = [];
  const setConnected = (c: boolean) => {
    if (c === connected) return;
    connected = c;
    for (const fn of listeners) fn(c);
  };
  const schedule = (ms: number) => {
    clearTimeout(timer);
    if (enabled) timer = setTimeout(tick, ms);
  };
  const tick = () => {
    if (!enabled) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    replica.sync().then(
      () => setConnected(enabled),
      () => setConnected(false), // reported by the replica's "error" event
    ).finally(() => {
      running = false;
      schedule(again ? 0 : POLL_MS);
      again = false;
    });
  };
  replica.on("change", (e) => {
    if (e.source === "local") schedule(0);
  });
  const control: LiveControl = {
    get enabled() {
      return enabled;
    },
    set(on) {
      enabled = on;
      if (on) schedule(0);
      else {
        clearTimeout(timer);
        setConnected(false);
      }
    },
    connected: () => connected,
    onConnection: (fn) => void listeners.push(fn),
    stop: () => control.set(false),
  };
  control.set(initial);
  return control;
}
