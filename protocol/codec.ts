import { Packr } from "msgpackr";
import { RelayError } from "./errors.ts";

/**
 * Plain msgpack, no record extension or other msgpackr-only types, so a
 * client in any language can speak the protocol. `bin` values decode to
 * Uint8Array (a Buffer in Node).
 */
const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  bundleStrings: false,
  mapsAsObjects: true,
  int64AsType: "number",
  useTimestamp32: false,
});

export function encode(value: unknown): Uint8Array<ArrayBuffer> {
  const size = binarySize(value, 0);
  // msgpackr returns a Buffer (Node) or Uint8Array, never over a SharedArrayBuffer.
  if (size < LARGE_MESSAGE_BYTES) return packr.pack(value) as Uint8Array<ArrayBuffer>;
  // Left to itself, msgpackr grows its buffer to 4× what the message needs
  // (2× past 16 MiB) with Buffer.allocUnsafeSlow, which workerd fills: ~20 ms
  // of the log object's CPU for W1's 6 MB page. One buffer the size of the
  // binaries plus room for the rest instead, then a small one again so the
  // next small message does not start a buffer of this size.
  packr.useBuffer(packBuffer(size + 64 * 1024));
  try {
    return packr.pack(value) as Uint8Array<ArrayBuffer>;
  } finally {
    packr.useBuffer(packBuffer(8192));
  }
}

/**
 * A buffer for msgpackr to pack into: a Buffer where the runtime has Node's
 * (msgpackr then writes strings with its methods), over a plain zeroed
 * ArrayBuffer (cheap to allocate), else a Uint8Array.
 */
function packBuffer(size: number): Uint8Array {
  return NodeBuffer ? (NodeBuffer.from(new ArrayBuffer(size), 0, size) as unknown as Uint8Array) : new Uint8Array(size);
}

/** From this size of a message's binaries on, encode sizes msgpackr's buffer itself. */
const LARGE_MESSAGE_BYTES = 1 << 20;

/**
 * The bytes of a message's binaries (a page's, a push's or a frame's
 * changesets, three levels down), 16 per other value met on the way: what
 * its encoding will need, give or take its keys and numbers.
 */
function binarySize(value: unknown, depth: number): number {
  if (value instanceof Uint8Array) return value.byteLength + 5;
  if (typeof value !== "object" || value === null || depth > 3) return 16;
  let n = 16;
  if (Array.isArray(value)) for (const v of value) n += binarySize(v, depth + 1);
  else for (const k in value) n += binarySize((value as Record<string, unknown>)[k], depth + 1);
  return n;
}

/**
 * Decode a msgpack document; anything that is not exactly one document of
 * plain msgpack types is `bad_request`.
 */
export function decode(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) throw new RelayError("bad_request", "empty msgpack body");
  checkPlain(bytes);
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (cause) {
    throw new RelayError("bad_request", "body is not valid msgpack", { cause });
  }
  return value;
}

/**
 * Walk the document's structure without building values and refuse any
 * extension type (ext 8/16/32, fixext 1–16) and the reserved 0xc1. msgpackr
 * has no switch for this: it decodes its own extensions (typed arrays 0x74,
 * records, sets, dates…) whatever the Packr's options, so a `changeset` sent
 * as a typed-array extension would otherwise pass as bytes. The walk skips
 * over strings and binaries, so it costs per item, not per byte.
 */
function checkPlain(bytes: Uint8Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.byteLength;
  let at = 0;
  /** Items still to read: containers add their children as they are met. */
  let pending = 1;
  const need = (n: number) => {
    if (at + n > end) throw new RelayError("bad_request", "body is not valid msgpack (truncated)");
  };
  const skip = (n: number) => {
    at += n;
  };
  const len = (size: 1 | 2 | 4) => {
    need(size);
    const n = size === 1 ? view.getUint8(at) : size === 2 ? view.getUint16(at) : view.getUint32(at);
    at += size;
    return n;
  };
  while (pending > 0) {
    pending--;
    need(1);
    const b = bytes[at++]!;
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) continue;
    if (b <= 0x8f) pending += 2 * (b & 0x0f);
    else if (b <= 0x9f) pending += b & 0x0f;
    else if (b <= 0xbf) at += b & 0x1f;
    else if (b === 0xc4 || b === 0xd9) skip(len(1));
    else if (b === 0xc5 || b === 0xda) skip(len(2));
    else if (b === 0xc6 || b === 0xdb) skip(len(4));
    else if (b === 0xca) at += 4;
    else if (b === 0xcb) at += 8;
    else if (b >= 0xcc && b <= 0xd3) at += 1 << (b & 0x03); // uint/int 8–64
    else if (b === 0xdc) pending += len(2);
    else if (b === 0xdd) pending += len(4);
    else if (b === 0xde) pending += 2 * len(2);
    else if (b === 0xdf) pending += 2 * len(4);
    else if (b === 0xc1) throw new RelayError("bad_request", "body is not valid msgpack (0xc1)");
    else throw new RelayError("bad_request", `msgpack extension types are not part of the protocol (0x${b.toString(16)} at byte ${at - 1})`);
    need(0);
  }
  if (at !== end) throw new RelayError("bad_request", `body is not valid msgpack (${end - at} bytes after the document)`);
}

/** Node's Buffer where the runtime has one: its `equals` is a native memcmp. */
const NodeBuffer = (globalThis as { Buffer?: { from(buffer: ArrayBufferLike, offset: number, length: number): { equals(other: Uint8Array): boolean } } }).Buffer;

/**
 * Byte-for-byte equality: idempotent pushes and own entries are recognised by
 * their exact bytes. A 6 MB changeset (a writer's every large push) took
 * 10-16 ms byte by byte in JavaScript: large ones go to memcmp where there is
 * one, else four bytes a step where both are aligned for it.
 */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  const n = a.byteLength;
  if (n !== b.byteLength) return false;
  if (NodeBuffer && n > 256) return NodeBuffer.from(a.buffer, a.byteOffset, n).equals(b);
  let i = 0;
  if ((a.byteOffset | b.byteOffset) % 4 === 0) {
    const wa = new Uint32Array(a.buffer, a.byteOffset, n >>> 2), wb = new Uint32Array(b.buffer, b.byteOffset, n >>> 2);
    for (let k = 0; k < wa.length; k++) if (wa[k] !== wb[k]) return false;
    i = wa.length << 2;
  }
  for (; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}
