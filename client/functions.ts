import type { Driver } from "./drivers/types.ts";
import * as store from "./store.ts";

/**
 * The SQL functions the library registers on every connection it opens:
 *
 * relay_replaying()  1 while the library applies log entries or rebases
 *   pending writes (the sync step), else 0. Triggers that write replicated
 *   tables are guarded with it (triggers.ts).
 *
 * relay_id()  an integer key unique across replicas, a safe JS integer.
 *   Layout: each replica draws a random starting point in [1, 2^53 - 2^32]
 *   once (stored in the database) and counts up from it. Two replicas' keys
 *   collide only if the ranges they have used overlap: for replicas i and j
 *   that is (used_i + used_j) / 2^53, so over n replicas that drew N keys in
 *   all, at most (n - 1) * N / 2^53 (1,000 replicas and 1,000,000 keys: about
 *   1 in 9 million). Keys a replica draws increase strictly (until it has
 *   drawn 4 billion from a start drawn near the top, when it draws a new
 *   start). No clock is involved, so clock skew cannot cause a collision;
 *   keys say nothing about time. Random bits per key instead (a 41-bit
 *   timestamp + 12 random bits, say) would collide after far fewer keys:
 *   N^2 / 2^54 for N keys, quadratic instead of linear in N.
 */
export const ID_MAX = Number.MAX_SAFE_INTEGER;
/** Every start leaves this many keys before ID_MAX. */
const ID_HEADROOM = 2 ** 32;

export class RelayFunctions {
  /** True inside replay(): what relay_replaying() answers. */
  private replaying = false;
  private next: number;
  private saved: number;

  private constructor(next: number) {
    this.next = this.saved = next;
  }

  /** Runs `fn` with relay_replaying() at 1: while the library applies log entries, undoes or redoes pending writes. */
  replay<T>(fn: () => T): T {
    this.replaying = true;
    try {
      return fn();
    } finally {
      this.replaying = false;
    }
  }

  /** Registers both functions on `d`; the id counter continues from where the database left it. */
  static install(d: Driver): RelayFunctions {
    const stored = store.getMeta(d, "id_next");
    const fns = new RelayFunctions(typeof stored === "number" ? stored : randomStart());
    d.function("relay_replaying", () => (fns.replaying ? 1 : 0));
    d.function("relay_id", () => fns.id());
    return fns;
  }

  /**
   * Persist the counter if it moved, inside the caller's transaction. Keys
   * drawn in a transaction that rolls back are not reused by this process;
   * after a restart they may be, which is harmless: no row holds them.
   */
  save(d: Driver): void {
    if (this.next === this.saved) return;
    store.setMeta(d, "id_next", this.next);
    this.saved = this.next;
  }

  private id(): number {
    if (this.next > ID_MAX) this.next = randomStart();
    return this.next++;
  }
}

/** Uniform in [1, ID_MAX - ID_HEADROOM + 1]. */
function randomStart(): number {
  const [hi, lo] = crypto.getRandomValues(new Uint32Array(2)) as unknown as [number, number];
  const span = ID_MAX - ID_HEADROOM + 1;
  // 53 random bits, folded into the span (the bias, 2^32 / 2^53, is negligible).
  return 1 + ((hi & 0x1fffff) * 2 ** 32 + lo) % span;
}
