import { RelayError } from "./errors.ts";
import { NAME_PATTERN } from "./limits.ts";

/**
 * The few checks every message validator is built from, on both sides of the
 * wire: a decoded value is `unknown` until one of these has looked at it (a
 * cast is not validation). Shape errors are `bad_request`; `what` names the
 * field in the message.
 */

export function bad(message: string): never {
  throw new RelayError("bad_request", message);
}

/** A msgpack map (decoded as a plain object). */
export function map(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) bad(`${what} must be a map`);
  return v as Record<string, unknown>;
}

export function array(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) bad(`${what} must be an array`);
  return v;
}

export function isName(v: unknown): v is string {
  return typeof v === "string" && NAME_PATTERN.test(v);
}

/** A database name or client id. */
export function name(v: unknown, what: string): string {
  if (!isName(v)) throw new RelayError("invalid_name", `${what} must match ${NAME_PATTERN.source}`);
  return v;
}

/** A positive safe integer (a seq, a cseq, a frame id). */
export function positiveInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) bad(`${what} must be a positive safe integer`);
  return v;
}

/** A non-negative safe integer (a head, a cursor, a timestamp). */
export function nonNegativeInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) bad(`${what} must be a non-negative safe integer`);
  return v;
}

export function bytes(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) bad(`${what} must be msgpack bin`);
  return v;
}

export function bool(v: unknown, what: string): boolean {
  if (typeof v !== "boolean") bad(`${what} must be a boolean`);
  return v;
}

/** Each item's `key` strictly above the previous one's (`step`: exactly one above). */
export function ascending<T>(items: readonly T[], key: (item: T) => number, what: string, step?: 1): readonly T[] {
  for (let i = 1; i < items.length; i++) {
    const [prev, cur] = [key(items[i - 1]!), key(items[i]!)];
    if (step === 1 ? cur !== prev + 1 : cur <= prev) bad(`${what}[${i}] must ${step === 1 ? "follow the previous entry's directly" : "be greater than the previous entry's"}`);
  }
  return items;
}
