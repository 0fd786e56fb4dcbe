/**
 * Error codes and where they come from: the wire's codes (protocol/errors.ts)
 * and the client's own (client/errors.ts) on one class, the relay's mapping
 * of failures to codes (worker/errors.ts, worker/config.ts), and where the log
 * object sheds load (worker/push-queue.ts).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { RelayError as WireRelayError, WIRE_ERRORS } from "../protocol/errors.ts";
import { decode, encode } from "../protocol/codec.ts";
import { parseRelayFrame } from "../protocol/frames.ts";
import { MAX_ENTRIES_PER_PUSH, MAX_QUEUED_PUSH_ENTRIES, OVERLOADED_RETRY_AFTER_MS } from "../protocol/limits.ts";
import { CLIENT_ERRORS, errorFromBody, isErrorCode, isRelayError, RelayError } from "../client/errors.ts";
import { errorResponse, outcome, toRelayError, unwrap } from "../worker/errors.ts";
import { bodyLimit, relaySecret } from "../worker/config.ts";
import { PushQueue } from "../worker/push-queue.ts";

describe("one error class, two sets of codes", () => {
  it("client codes never cross the wire and have no HTTP status", () => {
    for (const code of Object.keys(CLIENT_ERRORS)) assert.ok(!Object.hasOwn(WIRE_ERRORS, code), code);
    assert.equal(new RelayError("closed", "x").status, undefined);
    assert.equal(new RelayError("aborted", "x").status, undefined);
    assert.equal(new RelayError("cseq_conflict", "x").status, 409);
  });

  it("errors raised by protocol code inside the client are caught as the client's RelayError, and the reverse", () => {
    const fromProtocol = (() => {
      try {
        decode(new Uint8Array([0xc1]));
      } catch (e) {
        return e;
      }
    })();
    assert.ok(fromProtocol instanceof RelayError);
    assert.ok(isRelayError(fromProtocol, "bad_request"));
    assert.ok(new RelayError("network", "x") instanceof WireRelayError);
    assert.ok(!(new Error("x") instanceof RelayError));
  });

  it("retryable: overloaded, internal and network; misconfigured and the rest are final", () => {
    const retryable = (code: Parameters<typeof isErrorCode>[0]) => new RelayError(code as never, "x").retryable;
    assert.deepEqual(
      [...Object.keys(WIRE_ERRORS), ...Object.keys(CLIENT_ERRORS)].filter(retryable).sort(),
      ["internal", "network", "overloaded"],
    );
    assert.equal(new WireRelayError("misconfigured", "x").status, 500);
  });

  it("an error body from the relay keeps its code and Retry-After; foreign shapes are classified by status", () => {
    const e = errorFromBody(503, { error: { code: "overloaded", message: "busy" } }, 2000);
    assert.deepEqual([e.code, e.message, e.retryAfterMs, e.retryable], ["overloaded", "busy", 2000, true]);
    assert.equal(errorFromBody(503, "<html>").code, "overloaded");
    assert.equal(errorFromBody(502, null).code, "internal");
    // A client code in a response is not ours to believe: the relay never sends one.
    assert.equal(errorFromBody(400, { error: { code: "closed", message: "x" } }).code, "internal");
  });
});

describe("the relay's error mapping", () => {
  it("a missing RELAY_SECRET is misconfigured (500, not retryable) and says what to set", () => {
    assert.throws(() => relaySecret({}), (e) => {
      assert.ok(e instanceof WireRelayError);
      assert.deepEqual([e.code, e.status, e.retryable], ["misconfigured", 500, false]);
      assert.match(e.message, /wrangler secret put RELAY_SECRET/);
      return true;
    });
    assert.equal(relaySecret({ RELAY_SECRET: "s" }), "s");
    assert.equal(bodyLimit({ MAX_BODY_BYTES: "nope" }), bodyLimit({}));
  });

  it("the runtime's overloaded error becomes `overloaded` with Retry-After; other failures `internal` without details", async () => {
    const shed = toRelayError(Object.assign(new Error("Durable Object is overloaded. Too many requests queued."), { overloaded: true }));
    assert.deepEqual([shed.code, shed.retryAfterMs], ["overloaded", OVERLOADED_RETRY_AFTER_MS]);
    const res = errorResponse(shed);
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("retry-after"), String(OVERLOADED_RETRY_AFTER_MS / 1000));
    assert.equal((await res.json()).error.code, "overloaded");
    const original = console.error;
    console.error = () => {};
    try {
      const internal = errorResponse(new TypeError("secret detail"));
      assert.equal(internal.status, 500);
      assert.equal(internal.headers.get("retry-after"), null);
      assert.deepEqual(await internal.json(), { error: { code: "internal", message: "internal error" } });
    } finally {
      console.error = original;
    }
  });

  it("an RPC outcome carries the object's refusal back as the same RelayError", () => {
    const refused = outcome(() => {
      throw new WireRelayError("cseq_conflict", "no");
    });
    assert.throws(() => unwrap(refused), (e) => isRelayError(e, "cseq_conflict") && (e as Error).message === "no");
    assert.equal(unwrap(outcome(() => 42)), 42);
  });
});

describe("the log object sheds load", () => {
  const push = (n: number) => ({ socket: "ws", id: 1, client: "c", entries: Array.from({ length: n }, (_, i) => ({ cseq: i + 1, changeset: new Uint8Array(1) })) });

  it(`queues up to MAX_QUEUED_PUSH_ENTRIES (${MAX_QUEUED_PUSH_ENTRIES}) entries, then refuses as overloaded until drained`, () => {
    const q = new PushQueue<string>();
    assert.equal(q.add(push(MAX_ENTRIES_PER_PUSH)), true, "the first push schedules the drain");
    for (let i = 1; i < MAX_QUEUED_PUSH_ENTRIES / MAX_ENTRIES_PER_PUSH; i++) assert.equal(q.add(push(MAX_ENTRIES_PER_PUSH)), false);
    assert.throws(() => q.add(push(1)), (e) => isRelayError(e, "overloaded") && (e as RelayError).retryAfterMs === OVERLOADED_RETRY_AFTER_MS);
    assert.equal(q.take().length, MAX_QUEUED_PUSH_ENTRIES / MAX_ENTRIES_PER_PUSH);
    assert.equal(q.add(push(1)), true);
  });

  it("the socket's error frame carries the retry delay", () => {
    const frame = parseRelayFrame(decode(encode({ t: "error", id: 3, error: { code: "overloaded", message: "busy" }, retryAfterMs: 1000 })));
    assert.deepEqual(frame, { t: "error", id: 3, error: { code: "overloaded", message: "busy" }, retryAfterMs: 1000 });
  });
});
