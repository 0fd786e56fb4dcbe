import { C1, Packr } from "msgpackr";
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
  // msgpackr returns a Buffer (Node) or Uint8Array, never over a SharedArrayBuffer.
  return packr.pack(value) as Uint8Array<ArrayBuffer>;
}

/** Decode a msgpack document; anything that is not exactly one is `bad_request`. */
export function decode(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) throw new RelayError("bad_request", "empty msgpack body");
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (cause) {
    throw new RelayError("bad_request", "body is not valid msgpack", { cause });
  }
  // msgpackr decodes the reserved byte 0xc1 to a marker instead of failing.
  if (value === C1) throw new RelayError("bad_request", "body is not valid msgpack (0xc1)");
  return value;
}

/** Byte-for-byte equality: idempotent pushes and own entries are recognised by their exact bytes. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
