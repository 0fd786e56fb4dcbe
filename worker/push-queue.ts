import { RelayError } from "../protocol/errors.ts";
import { MAX_QUEUED_PUSH_ENTRIES, OVERLOADED_RETRY_AFTER_MS } from "../protocol/limits.ts";
import type { PushEntry } from "../protocol/messages.ts";

/** A socket push waiting for the log object's next turn. */
export interface QueuedPush<S> {
  socket: S;
  id: number;
  client: string;
  entries: PushEntry[];
}

/**
 * Socket pushes wait here for the next turn, so a burst becomes one batch
 * with one storage commit each (worker/log.ts says why). It is also where the
 * object sheds load: past MAX_QUEUED_PUSH_ENTRIES a push is refused as
 * `overloaded` with a retry delay, instead of memory growing with every
 * writer that pushes faster than the log commits.
 */
export class PushQueue<S> {
  private items: QueuedPush<S>[] = [];
  private entries = 0;

  /** Queue a push; true when the queue was empty (the caller schedules a drain). */
  add(push: QueuedPush<S>): boolean {
    if (this.entries + push.entries.length > MAX_QUEUED_PUSH_ENTRIES) {
      throw new RelayError("overloaded", `the database has ${this.entries} pushed entries waiting; try again shortly`, {
        retryAfterMs: OVERLOADED_RETRY_AFTER_MS,
      });
    }
    this.items.push(push);
    this.entries += push.entries.length;
    return this.items.length === 1;
  }

  /** Everything queued, oldest first; the queue is empty afterwards. */
  take(): QueuedPush<S>[] {
    const batch = this.items;
    this.items = [];
    this.entries = 0;
    return batch;
  }
}
