/**
 * A tiny typed emitter. A listener that throws never breaks the replica: the
 * error is reported once to the console. `Events` maps each event name to its
 * payload: an interface without an index signature, so a misspelt name is a
 * compile error.
 */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<(e: never) => void>>();

  on<K extends keyof Events>(event: K, fn: (e: Events[K]) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn as (e: never) => void);
    return () => set.delete(fn as (e: never) => void);
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    for (const fn of this.listeners.get(event) ?? []) this.deliver(fn as (e: Events[K]) => void, payload, event);
  }

  /** One listener, one event (also for events raised before it subscribed). */
  deliver<K extends keyof Events>(fn: (e: Events[K]) => void, payload: Events[K], event?: K): void {
    try {
      fn(payload);
    } catch (e) {
      console.error(`changeset-relay: a "${String(event ?? "")}" listener threw`, e);
    }
  }

  count(event: keyof Events): number {
    return this.listeners.get(event)?.size ?? 0;
  }
}

/** Serialises async sections: each runs after the previous one settles. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => T | Promise<T>): Promise<T> {
    const next = this.tail.then(() => fn());
    this.tail = next.catch(() => undefined);
    return next;
  }
}
