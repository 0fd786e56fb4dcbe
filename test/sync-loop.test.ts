import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Emitter } from "../client/events.ts";
import type { Clock } from "../client/backoff.ts";
import { SyncLoop, type SyncDelegate } from "../client/sync-loop.ts";
import type { Transport } from "../client/transport/http.ts";
import type { ReplicaEvents } from "../client/types.ts";
import { RelayError } from "../client/errors.ts";
import type { Ack, LogEntry, PullResponse, PushEntry, PushResponse } from "../protocol/messages.ts";

/** The sync loop alone, on a fake clock and a scripted transport: no relay, no SQLite, no real time. */

/** A clock whose time moves only when the test says so. */
class FakeClock implements Clock {
  t = 0;
  private waits: { at: number; ms: number; resolve: () => void }[] = [];
  now = () => this.t;
  sleep = (ms: number, signal?: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(new RelayError("aborted", "aborted"));
      const w = { at: this.t + ms, ms, resolve };
      this.waits.push(w);
      signal?.addEventListener("abort", () => {
        this.waits = this.waits.filter((x) => x !== w);
        reject(new RelayError("aborted", "aborted"));
      }, { once: true });
    });
  /** Lengths of the waits in progress. */
  get pending(): number[] {
    return this.waits.map((w) => w.ms);
  }
  /** Move time on by `ms`, waking each wait due on the way, in order, and letting what it starts run. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      const due = this.waits.filter((w) => w.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.waits = this.waits.filter((w) => w !== due);
      this.t = due.at;
      due.resolve();
    }
    this.t = end;
    await settle();
  }
}

/** Let promise chains (locks, retries, .then callbacks) run to their next real wait. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void, reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => ((resolve = a), (reject = b)));
  return { promise, resolve, reject };
}

const EMPTY: PullResponse = { entries: [], head: 0, more: false };
const BACKOFF = { baseMs: 100, capMs: 10_000, maxAttempts: 6, random: () => 0.5 };

interface Script {
  pull?: (after: number, signal?: AbortSignal) => Promise<PullResponse>;
  /** The sync step over a pulled page (default: moves the cursor to its last seq). */
  page?: (entries: LogEntry[]) => Promise<boolean>;
  push?: (entries: PushEntry[]) => Promise<PushResponse>;
  pending?: PushEntry[];
  maxAttempts?: number;
}

function setup(script: Script = {}) {
  const clock = new FakeClock();
  const calls = { pulls: [] as number[], pushes: [] as number[][], acked: [] as Ack[][], pages: [] as LogEntry[][], fatal: 0 };
  const pending = [...(script.pending ?? [])];
  let cursor = 0;
  const transport: Transport = {
    pull: (after, _limit, signal) => {
      calls.pulls.push(after);
      return script.pull ? script.pull(after, signal) : Promise.resolve(EMPTY);
    },
    push: (_client, entries) => {
      calls.pushes.push(entries.map((e) => e.cseq));
      return script.push ? script.push(entries) : Promise.resolve({ acks: entries.map((e) => ({ cseq: e.cseq, seq: e.cseq })), head: entries.at(-1)!.cseq });
    },
  };
  const delegate: SyncDelegate = {
    snapshotReset: () => Promise.resolve(false),
    now: clock.now,
    sleep: clock.sleep,
    transport,
    locked: async (fn) => fn(),
    assertOpen: () => undefined,
    nextPush: (after) => ({ entries: pending.filter((e) => e.cseq > after).slice(0, 2), schema: [] }),
    schemaAhead: () => false,
    cursor: () => cursor,
    page: async (entries) => {
      calls.pages.push([...entries]);
      if (script.page && !(await script.page([...entries]))) return false;
      cursor = entries.at(-1)!.seq;
      return true;
    },
    acked: async (acks) => {
      calls.acked.push([...acks]);
      cursor = acks.at(-1)!.seq;
      return true;
    },
    fatal: () => void calls.fatal++,
  };
  const events = new Emitter<ReplicaEvents>();
  const errors: string[] = [];
  events.on("error", (e) => errors.push(e.code));
  const loop = new SyncLoop(delegate, events, { clientId: "me", readOnly: false, backoff: { ...BACKOFF, maxAttempts: script.maxAttempts ?? BACKOFF.maxAttempts } });
  return { clock, calls, loop, errors };
}

const entry = (cseq: number): PushEntry => ({ cseq, changeset: new Uint8Array([cseq]) });
const logEntry = (seq: number): LogEntry => ({ seq, client: "other", cseq: seq, changeset: new Uint8Array([seq]), ts: 0 });

describe("sync loop", () => {
  it("retries a failed request with full-jitter backoff on the delegate's clock", async () => {
    let failures = 2;
    const { clock, calls, loop } = setup({
      pull: async () => (failures-- > 0 ? Promise.reject(new RelayError("network", "down")) : { entries: [logEntry(1)], head: 1, more: false }),
    });
    let done: unknown;
    loop.sync().then((ev) => (done = ev));
    await settle();
    assert.equal(calls.pulls.length, 1);
    assert.deepEqual(clock.pending, [50]); // random 0.5 × base 100
    await clock.advance(49);
    assert.equal(calls.pulls.length, 1, "no retry before the wait is over");
    await clock.advance(1);
    assert.equal(calls.pulls.length, 2);
    assert.deepEqual(clock.pending, [100]); // 0.5 × 200: doubled
    await clock.advance(100);
    assert.equal(calls.pulls.length, 3);
    assert.deepEqual(done, { pushed: 0, pulled: 1, cursor: 1, head: 1 });
  });

  it("honours a Retry-After floor above the jittered delay", async () => {
    let failures = 1;
    const { clock, calls, loop } = setup({
      pull: async () => (failures-- > 0 ? Promise.reject(new RelayError("overloaded", "busy", { retryAfterMs: 3_000 })) : EMPTY),
    });
    const done = loop.sync();
    await settle();
    assert.deepEqual(clock.pending, [3_000]);
    await clock.advance(3_000);
    await done;
    assert.equal(calls.pulls.length, 2);
  });

  it("a refused push is retried after baseMs through the delegate", async () => {
    const { clock, calls, loop } = setup();
    loop.retryLater(100);
    await clock.advance(99);
    assert.equal(calls.pulls.length, 0);
    await clock.advance(1);
    assert.equal(calls.pulls.length, 1, "the retry ran a sync");
    assert.deepEqual(loop.current, { name: "idle" });
  });

  it("close() cancels a pending retry and ends a backoff wait in flight", async () => {
    const { clock, calls, loop, errors } = setup({ pull: async () => Promise.reject(new RelayError("network", "down")) });
    loop.retryLater(100);
    const running = loop.sync();
    await settle();
    assert.deepEqual(clock.pending.sort((a, b) => a - b), [50, 100]);
    const closed = loop.close();
    await assert.rejects(running, (e: RelayError) => e.code === "aborted");
    await closed;
    assert.deepEqual(clock.pending, [], "no wait left behind");
    await clock.advance(10_000);
    assert.equal(calls.pulls.length, 1, "nothing ran after close()");
    assert.deepEqual(errors, [], "an abort is not an error");
    assert.deepEqual(loop.current, { name: "closed" });
    loop.request();
    loop.retryLater(1);
    await clock.advance(10);
    assert.equal(calls.pulls.length, 1);
  });

  it("requests made while a run is in flight coalesce into one more run", async () => {
    const gates: Deferred<PullResponse>[] = [];
    const { calls, loop } = setup({
      pull: () => {
        const g = deferred<PullResponse>();
        gates.push(g);
        return g.promise;
      },
    });
    loop.request();
    loop.request();
    loop.request();
    await settle();
    assert.equal(calls.pulls.length, 1);
    assert.deepEqual(loop.current, { name: "running", again: true });
    gates[0]!.resolve(EMPTY);
    await settle();
    assert.equal(calls.pulls.length, 2, "one more run for all three requests");
    assert.deepEqual(loop.current, { name: "running", again: false });
    gates[1]!.resolve(EMPTY);
    await settle();
    assert.equal(calls.pulls.length, 2);
    assert.deepEqual(loop.current, { name: "idle" });
  });

  it("a final error in a background run stops live sync; a retryable one only reports", async () => {
    for (const [code, fatal] of [["unauthorized", 1], ["network", 0]] as const) {
      const { calls, loop, errors } = setup({ pull: async () => Promise.reject(new RelayError(code, "no")), maxAttempts: 1 });
      loop.request();
      await settle();
      assert.equal(calls.fatal, fatal, code);
      assert.deepEqual(errors, [code]);
      assert.deepEqual(loop.current, { name: "idle" });
    }
  });

  it("pushes the outbox batch by batch, applies the acks, then pulls from the cursor", async () => {
    const { calls, loop } = setup({
      pending: [entry(1), entry(2), entry(3)],
      pull: async (after) => (after === 3 ? { entries: [logEntry(4)], head: 5, more: true } : { entries: [logEntry(5)], head: 5, more: false }),
    });
    const ev = await loop.sync();
    assert.deepEqual(calls.pushes, [[1, 2], [3]]);
    assert.deepEqual(calls.acked.map((a) => a.map((x) => x.cseq)), [[1, 2, 3]]);
    assert.deepEqual(calls.pulls, [3, 4], "the pull starts after our acknowledged entries");
    assert.deepEqual(ev, { pushed: 3, pulled: 2, cursor: 5, head: 5 });
  });

  it("refuses a page that skips log entries", async () => {
    const { loop, errors } = setup({ pull: async () => ({ entries: [logEntry(3)], head: 3, more: false }) });
    await assert.rejects(loop.sync(), (e: RelayError) => e.code === "internal");
    assert.deepEqual(errors, ["internal"]);
  });

  describe("pipelined pulls", () => {
    /**
     * A log of `head` entries served two per page, each answered on a later
     * turn (as a network would) unless its `after` is in `unanswered`; a
     * request aborted before its answer is recorded in `aborted`.
     */
    function pages(head: number, unanswered: number[] = []) {
      const aborted: number[] = [];
      const pull = (after: number, signal?: AbortSignal) =>
        new Promise<PullResponse>((resolve, reject) => {
          if (signal?.aborted) return reject(new RelayError("aborted", "aborted"));
          let answered = false;
          signal?.addEventListener("abort", () => {
            if (answered) return;
            aborted.push(after);
            reject(new RelayError("aborted", "aborted"));
          }, { once: true });
          const entries = [after + 1, after + 2].filter((s) => s <= head).map(logEntry);
          if (unanswered.includes(after)) return;
          setImmediate(() => {
            answered = true;
            resolve({ entries, head, more: after + 2 < head });
          });
        });
      return { pull, aborted };
    }
    /** Each apply waits until the test releases it. */
    function heldSteps(outcome: (n: number) => boolean | Error = () => true) {
      const waiting: Deferred<void>[] = [];
      let n = 0;
      const page = async () => {
        const d = deferred<void>();
        waiting.push(d);
        await d.promise;
        const r = outcome(++n);
        if (r instanceof Error) throw r;
        return r;
      };
      return { page, release: () => waiting.shift()!.resolve(), get held() { return waiting.length; } };
    }
    const seqs = (pages: LogEntry[][]) => pages.map((p) => p.map((e) => e.seq));

    it("requests the next page while the current one applies, and applies pages in log order", async () => {
      const log = pages(6);
      const steps = heldSteps();
      const { calls, loop } = setup({ pull: log.pull, page: steps.page });
      const run = loop.sync();
      await settle();
      assert.equal(steps.held, 1, "page 1 is applying");
      assert.deepEqual(calls.pulls, [0, 2], "page 2 was requested before page 1 finished applying");
      steps.release();
      await settle();
      assert.deepEqual(calls.pulls, [0, 2, 4]);
      assert.deepEqual(seqs(calls.pages), [[1, 2], [3, 4]]);
      steps.release();
      await settle();
      steps.release();
      const ev = await run;
      assert.deepEqual(seqs(calls.pages), [[1, 2], [3, 4], [5, 6]]);
      assert.deepEqual(calls.pulls, [0, 2, 4], "no request after the last page");
      assert.deepEqual(ev, { pushed: 0, pulled: 6, cursor: 6, head: 6 });
    });

    it("a page that fails to apply cancels the request in flight and ends the sync with its error", async () => {
      const log = pages(6, [2]);
      const steps = heldSteps((n) => (n === 1 ? new RelayError("apply_failed", "poison") : true));
      const { calls, loop, errors } = setup({ pull: log.pull, page: steps.page });
      const run = loop.sync();
      await settle();
      steps.release();
      await assert.rejects(run, (e: RelayError) => e.code === "apply_failed");
      await settle();
      assert.deepEqual(seqs(calls.pages), [[1, 2]], "nothing applied after the failed page");
      assert.deepEqual(calls.pulls, [0, 2]);
      assert.deepEqual(log.aborted, [2], "the prefetched request was cancelled");
      assert.deepEqual(errors, ["apply_failed"]);
    });

    it("close() during a pipelined pull cancels the request in flight; nothing applies after the page in progress", async () => {
      const log = pages(6, [2]);
      const steps = heldSteps();
      const { calls, loop, errors } = setup({ pull: log.pull, page: steps.page });
      const run = loop.sync();
      await settle();
      assert.deepEqual(calls.pulls, [0, 2]);
      const closed = loop.close();
      steps.release();
      await assert.rejects(run, (e: RelayError) => e.code === "aborted");
      await closed;
      assert.deepEqual(seqs(calls.pages), [[1, 2]]);
      assert.deepEqual(log.aborted, [2]);
      assert.deepEqual(errors, [], "an abort is not reported as an error");
    });

    it("a page received before close() is not applied after it", async () => {
      const log = pages(6);
      const steps = heldSteps();
      const { calls, loop } = setup({ pull: log.pull, page: steps.page });
      const run = loop.sync();
      await settle();
      assert.deepEqual(calls.pulls, [0, 2], "page 2 has arrived meanwhile");
      const closed = loop.close();
      steps.release();
      await assert.rejects(run, (e: RelayError) => e.code === "aborted");
      await closed;
      assert.deepEqual(seqs(calls.pages), [[1, 2]]);
      assert.equal(steps.held, 0);
    });

    it("a page that does not follow the cursor drops the prefetched page and pulls again from the cursor", async () => {
      const log = pages(4);
      // The first step finds a gap (the cursor stays at 0); the rest apply.
      const { calls, loop } = setup({ pull: log.pull, page: async (entries) => entries[0]!.seq !== 1 || calls.pages.length > 1 });
      const ev = await loop.sync();
      assert.deepEqual(calls.pulls, [0, 2, 0, 2], "the page prefetched after the gap is not used");
      assert.deepEqual(seqs(calls.pages), [[1, 2], [1, 2], [3, 4]]);
      assert.equal(ev.cursor, 4);
    });
  });
});
