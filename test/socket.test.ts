import { describe, it, mock } from "node:test";
import assert from "node:assert/strict";
import { LiveSocket, type WebSocketLike } from "../client/transport/socket.ts";
import { backoffDelay, withRetry } from "../client/backoff.ts";
import { RelayError } from "../client/errors.ts";
import { encode } from "../protocol/codec.ts";

/** A WebSocket double the test drives by hand: no network, no sleeps. */
class FakeSocket implements WebSocketLike {
  binaryType = "blob";
  readyState = 0;
  sent: unknown[] = [];
  /** Codes of every close() call, first one first. */
  closes: number[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  send(data: string | Uint8Array) {
    this.sent.push(data);
  }
  close(code = 1000) {
    this.closes.push(code);
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code });
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  fail() {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code: 1006 });
  }
}

function harness(opts: { heartbeatMs?: number } = {}) {
  const sockets: FakeSocket[] = [];
  const log: string[] = [];
  const live = new LiveSocket(
    {
      url: "ws://relay/v1/db/x/ws",
      backoff: { baseMs: 100, capMs: 1000, maxAttempts: Infinity, random: () => 1 },
      ...opts,
      createWebSocket: () => {
        const s = new FakeSocket();
        sockets.push(s);
        log.push("connect");
        return s;
      },
    },
    {
      opened: (send) => {
        log.push("opened");
        send({ t: "sub", after: 0 });
      },
      frame: (f) => log.push(`frame:${f.t}`),
      closed: (attempt) => log.push(`closed:${attempt}`),
    },
  );
  return { live, sockets, log };
}

describe("LiveSocket state machine", () => {
  it("connects, subscribes on open, delivers parsed frames", () => {
    const { live, sockets, log } = harness();
    live.start();
    assert.deepEqual(live.current, { name: "connecting", attempt: 0 });
    sockets[0]!.open();
    assert.equal(live.connected, true);
    assert.equal(sockets[0]!.sent.length, 1, "the sub frame went out");
    sockets[0]!.onmessage!({ data: Uint8Array.from(encode({ t: "head", head: 3 })).buffer });
    sockets[0]!.onmessage!({ data: "pong" });
    assert.deepEqual(log, ["connect", "opened", "frame:head"]);
    live.stop();
  });

  it("reconnects with growing backoff after failures, at once after a drop, and stop() ends it", () => {
    mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
    try {
      const { live, sockets, log } = harness();
      live.start();
      sockets[0]!.fail();
      assert.deepEqual(live.current, { name: "waiting", attempt: 1 });
      mock.timers.tick(99);
      assert.equal(sockets.length, 1, "waits the backoff (random=1: base·2^0 = 100 ms)");
      mock.timers.tick(1);
      assert.equal(sockets.length, 2);
      sockets[1]!.fail();
      mock.timers.tick(199);
      assert.equal(sockets.length, 2, "second failure waits 200 ms");
      mock.timers.tick(1);
      sockets[2]!.open();
      sockets[2]!.close(1011);
      assert.deepEqual(live.current, { name: "waiting", attempt: 0 });
      mock.timers.tick(0);
      assert.equal(sockets.length, 4, "a drop of an open socket reconnects at once");
      live.stop();
      mock.timers.tick(10_000);
      assert.equal(sockets.length, 4, "stopped: no more attempts");
      assert.deepEqual(live.current, { name: "stopped" });
      assert.deepEqual(log.filter((l) => l.startsWith("closed")), ["closed:1", "closed:2", "closed:0"]);
    } finally {
      mock.timers.reset();
    }
  });

  it("a silent socket is dropped after two missed heartbeats", () => {
    mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
    try {
      const { live, sockets } = harness({ heartbeatMs: 1000 });
      live.start();
      sockets[0]!.open();
      mock.timers.tick(1000);
      assert.deepEqual(sockets[0]!.sent.at(-1), "ping");
      mock.timers.tick(2000);
      assert.equal(sockets[0]!.closes[0], 4000, "interrupted");
      live.stop();
    } finally {
      mock.timers.reset();
    }
  });

  it("an unreadable frame closes the socket instead of reaching the delegate", () => {
    const { live, sockets, log } = harness();
    live.start();
    sockets[0]!.open();
    sockets[0]!.onmessage!({ data: new Uint8Array([0x93, 1, 2, 3]).buffer });
    assert.equal(sockets[0]!.closes[0], 4001);
    assert.ok(!log.some((l) => l.startsWith("frame")));
    live.stop();
  });
});

describe("backoff", () => {
  it("full jitter within [0, min(cap, base·2^n)], never below the server's floor", () => {
    const o = { baseMs: 100, capMs: 1000, maxAttempts: 5 };
    assert.equal(backoffDelay(0, { ...o, random: () => 0.999999 }), 99);
    assert.equal(backoffDelay(10, { ...o, random: () => 0.5 }), 500);
    assert.equal(backoffDelay(3, { ...o, random: () => 0 }), 0);
    assert.equal(backoffDelay(3, { ...o, random: () => 0 }, 2500), 2500);
  });

  it("retries retryable errors only, up to maxAttempts", async () => {
    let calls = 0;
    await assert.rejects(
      withRetry(async () => {
        calls++;
        throw new RelayError("network", "down");
      }, { baseMs: 0, capMs: 0, maxAttempts: 3 }),
      (e: unknown) => e instanceof RelayError && e.code === "network",
    );
    assert.equal(calls, 3);
    calls = 0;
    await assert.rejects(withRetry(async () => {
      calls++;
      throw new RelayError("forbidden", "no");
    }, { baseMs: 0, capMs: 0, maxAttempts: 3 }));
    assert.equal(calls, 1, "fatal errors are not retried");
  });
});
