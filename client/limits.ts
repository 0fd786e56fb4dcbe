import { MAX_BODY_BYTES_DEFAULT, MAX_PARTED_ENTRY_BYTES, maxEntryBytes, PART_BYTES_DEFAULT } from "../protocol/limits.ts";
import type { HealthResponse } from "../protocol/messages.ts";
import type { Driver } from "./drivers/types.ts";
import { RelayError } from "./errors.ts";
import type { EntryLimits } from "./parts.ts";
import * as store from "./store.ts";
import type { Transport } from "./transport/http.ts";

/**
 * What the relay accepts (client/parts.ts): learned from its /v1/health,
 * asked once per open and again when a push is refused for its size, and
 * kept in the database so an offline open knows the last answer.
 */
export class RelayLimits {
  private readonly d: Driver;
  private readonly transport: Transport;
  private readonly locked: (fn: () => void) => Promise<void>;
  private readonly signal: AbortSignal;
  private current: EntryLimits;
  private known = false;
  /** The request under way (started at open): every sync shares it. */
  private learning: Promise<void> | undefined;

  /** `locked` runs under the replica's lock (skipped once closed); `signal` is aborted when the replica closes. */
  constructor(d: Driver, transport: Transport, locked: (fn: () => void) => Promise<void>, signal: AbortSignal) {
    this.d = d;
    this.transport = transport;
    this.locked = locked;
    this.signal = signal;
    this.current = storedLimits(d);
  }

  /** What a write must fit. A transport that cannot push parts (an app's own) keeps every write within one request. */
  get entry(): EntryLimits {
    return this.transport.pushPart !== undefined ? this.current : { ...this.current, partBytes: undefined };
  }

  /** Asked once per open (again after a failure); resolves when known or unreachable, never rejects. */
  learned(): Promise<void> {
    if (this.known || this.signal.aborted) return Promise.resolve();
    return (this.learning ??= this.learn().finally(() => (this.learning = undefined)));
  }

  /** The limits, for a sync: it stops waiting as soon as `signal` is aborted. */
  waitFor(signal: AbortSignal): Promise<void> {
    return untilAborted(this.learned(), signal);
  }

  /** Ask again: a part or push refused for its size (the relay may have been reconfigured since open). */
  relearn(signal: AbortSignal): Promise<void> {
    this.known = false;
    return this.waitFor(signal);
  }

  private async learn(): Promise<void> {
    let health: HealthResponse | undefined;
    try {
      health = await this.transport.health?.(this.signal);
    } catch {
      return; // unreachable now (or closed): a push will say so; the next sync asks again
    }
    this.known = true;
    if (!health) return;
    const limits = limitsFrom(health);
    if (JSON.stringify(limits) === JSON.stringify(this.current)) return;
    await this.locked(() => {
      this.current = limits;
      store.setMeta(this.d, "max_entry_bytes", limits.requestBytes);
      store.setMeta(this.d, "part_bytes", limits.partBytes ?? 0);
      store.setMeta(this.d, "max_parted_entry_bytes", limits.partedBytes);
    });
  }
}

/** `p`, or an "aborted" error as soon as `signal` is: a sync stops waiting for what it shares with others. */
function untilAborted(p: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(new RelayError("aborted", "sync aborted"));
  return new Promise((resolve, reject) => {
    const abort = () => reject(new RelayError("aborted", "sync aborted"));
    signal.addEventListener("abort", abort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}

/**
 * The relay's limits as last learned (kept in _relay_meta); before any
 * answer, those of a relay of this version (defaults, parts taken).
 */
function storedLimits(d: Driver): EntryLimits {
  const get = (key: string, dflt: number) => Number(store.getMeta(d, key) ?? dflt);
  const part = get("part_bytes", PART_BYTES_DEFAULT);
  return { requestBytes: get("max_entry_bytes", maxEntryBytes(MAX_BODY_BYTES_DEFAULT)), partBytes: part > 0 ? part : undefined, partedBytes: get("max_parted_entry_bytes", MAX_PARTED_ENTRY_BYTES) };
}

/** What /v1/health says; a relay that names no part size takes no parts (older relays: writes stay within one request). */
function limitsFrom(health: HealthResponse): EntryLimits {
  const int = (v: unknown): number | undefined => (typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined);
  const l = health.limits;
  const requestBytes = int(l?.maxEntryBytes) ?? maxEntryBytes(MAX_BODY_BYTES_DEFAULT);
  const partBytes = int(l?.partBytes);
  return { requestBytes, partBytes, partedBytes: partBytes === undefined ? requestBytes : (int(l?.maxPartedEntryBytes) ?? MAX_PARTED_ENTRY_BYTES) };
}
