import type { Sqlite3Static } from "@sqlite.org/sqlite-wasm";
import type { SqlValue } from "../../protocol/changeset.ts";
import { narrow } from "./types.ts";
import { TRANSIENT, type Exports } from "./wasm-module.ts";

// No Node-only imports in this file: it also runs in a browser Web Worker.

/**
 * Values between JavaScript and sqlite-wasm's heap, through the raw C
 * exports: parameters bound and columns read without sqlite-wasm's argument
 * glue, and one heap buffer, grown when needed, reused for every bound text
 * or blob (no allocation per value). One per connection (wasm.ts).
 */
export class HeapValues {
  #sqlite3: Sqlite3Static;
  #x: Exports;
  #scratch: number;
  #scratchSize = 4096;

  constructor(sqlite3: Sqlite3Static, x: Exports) {
    this.#sqlite3 = sqlite3;
    this.#x = x;
    this.#scratch = sqlite3.wasm.alloc(this.#scratchSize);
  }

  /** Binds `v` to parameter `i` of statement `p`; SQLite's result code. */
  bind(p: number, i: number, v: SqlValue): number {
    const x = this.#x;
    let rc: number;
    if (v === null) rc = x.sqlite3_bind_null(p, i);
    else if (typeof v === "number") {
      // Same rule as the node driver: safe integers are INTEGER, other numbers REAL.
      if ((v | 0) === v) rc = x.sqlite3_bind_int(p, i, v);
      else rc = Number.isSafeInteger(v) ? x.sqlite3_bind_int64(p, i, BigInt(v)) : x.sqlite3_bind_double(p, i, v);
    } else if (typeof v === "bigint") {
      // The int64 binding would silently wrap an out-of-range value.
      if (v < INT64_MIN || v > INT64_MAX) throw new RangeError(`BigInt value is too large to bind: ${v}`);
      rc = x.sqlite3_bind_int64(p, i, v);
    } else if (typeof v === "string") {
      const at = this.#room(v.length * 3); // UTF-16 to UTF-8: at most 3 bytes per unit
      const { written } = encoder.encodeInto(v, this.#sqlite3.wasm.heap8u().subarray(at, at + v.length * 3));
      rc = x.sqlite3_bind_text(p, i, at, written, TRANSIENT);
    } else {
      // #room never returns a null pointer, which would bind NULL instead of an empty blob.
      const at = this.#room(v.byteLength);
      this.#sqlite3.wasm.heap8u().set(v, at);
      rc = x.sqlite3_bind_blob(p, i, at, v.byteLength, TRANSIENT);
    }
    return rc;
  }

  /** Column `i` of the current row of statement `p`. */
  column(p: number, i: number): SqlValue {
    const x = this.#x;
    switch (x.sqlite3_column_type(p, i)) {
      case 1: {
        // SQLITE_INTEGER. Exact as a double when it is a safe integer: no bigint in between.
        const d = x.sqlite3_column_double(p, i);
        return Number.isSafeInteger(d) ? d : narrow(x.sqlite3_column_int64(p, i));
      }
      case 2: // SQLITE_FLOAT
        return x.sqlite3_column_double(p, i);
      case 3: {
        // SQLITE_TEXT, every byte of it (a NUL included, as node:sqlite reads it).
        const ptr = x.sqlite3_column_text(p, i);
        const n = x.sqlite3_column_bytes(p, i);
        return n === 0 ? "" : this.text(ptr, n);
      }
      case 4: {
        // SQLITE_BLOB
        const ptr = x.sqlite3_column_blob(p, i); // before _bytes, as SQLite documents
        const n = x.sqlite3_column_bytes(p, i);
        return n === 0 ? new Uint8Array(0) : this.#sqlite3.wasm.heap8u().slice(ptr, ptr + n);
      }
      default:
        return null;
    }
  }

  /** UTF-8 from the heap. Some browsers' TextDecoder refuses a view of shared memory (a build with threads): copy it then. */
  text(p: number, n: number): string {
    const heap = this.#sqlite3.wasm.heap8u();
    return decoder.decode(heap.buffer instanceof ArrayBuffer ? heap.subarray(p, p + n) : heap.slice(p, p + n));
  }

  /** The scratch buffer, grown to hold `n` bytes. */
  #room(n: number): number {
    if (n > this.#scratchSize) {
      const { wasm } = this.#sqlite3;
      const size = Math.max(n, this.#scratchSize * 2);
      const p = wasm.alloc(size) as number; // throws when out of memory, keeping the old buffer
      wasm.dealloc(this.#scratch);
      this.#scratch = p;
      this.#scratchSize = size;
    }
    return this.#scratch;
  }

  free(): void {
    this.#sqlite3.wasm.dealloc(this.#scratch);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
