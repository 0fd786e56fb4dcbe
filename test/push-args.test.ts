/**
 * How a validated push reaches the log object (worker/push-args.ts): inline
 * under RPC_INLINE_BYTES, as one byte stream cut at known sizes above it
 * (RPC refuses serialized values over 32 MiB). Either way the object gets
 * the entries the Worker validated, byte for byte.
 */
import { it } from "node:test";
import assert from "node:assert/strict";
import { fromPushArgs, RPC_INLINE_BYTES, toPushArgs } from "../worker/push-args.ts";

const entry = (cseq: number, size: number) => ({ cseq, changeset: new Uint8Array(size).map((_, i) => (i * 31 + cseq) % 256) });

it("a small push travels as its entries", async () => {
  const entries = [entry(1, 10), entry(2, 20)];
  const args = toPushArgs(entries);
  assert.ok("entries" in args);
  assert.deepEqual(await fromPushArgs(args), entries);
});

it("a push above the inline limit travels as one stream and is cut back into the same entries", async () => {
  const entries = [entry(1, RPC_INLINE_BYTES / 2), entry(2, 3), entry(3, RPC_INLINE_BYTES / 2 + 1), entry(4, 0)];
  const args = toPushArgs(entries);
  assert.ok("bytes" in args, "sent as a stream");
  assert.deepEqual(args.sizes.map((s) => s.size), entries.map((e) => e.changeset.byteLength));
  const back = await fromPushArgs(args);
  assert.deepEqual(back.map((e) => e.cseq), [1, 2, 3, 4]);
  for (const [i, e] of back.entries()) assert.ok(Buffer.from(e.changeset).equals(Buffer.from(entries[i]!.changeset)), `entry ${i}`);
});
