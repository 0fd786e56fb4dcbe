/**
 * SQLite itself as the oracle for the changeset codec: sqlite-wasm 3.54.1
 * (the build the client ships) parses, walks and inverts changesets with the
 * session extension's own C code. Shared by the codec tests and the
 * differential fuzzer.
 */
import sqlite3InitModule from "@sqlite.org/sqlite-wasm";

export const sqlite3 = await sqlite3InitModule();
export const { capi, wasm } = sqlite3;
// The wasm helpers are typed with branded pointer types; plain numbers are what they take.
type Ptr = any;

/** Run `f` on a copy of `bytes` in the wasm heap. */
export function withWasmCopy<T>(bytes: Uint8Array, f: (p: Ptr) => T): T {
  const p: Ptr = wasm.alloc(Math.max(1, bytes.length));
  try {
    wasm.heap8u().set(bytes, Number(p));
    return f(p);
  } finally {
    wasm.dealloc(p);
  }
}

/** sqlite3changeset_invert: the output bytes, or the SQLite error code. */
export function sqliteInvert(bytes: Uint8Array): Uint8Array | number {
  return withWasmCopy(bytes, (p) => {
    const sp = wasm.pstack.pointer;
    try {
      const pnOut: Ptr = wasm.pstack.allocPtr();
      const ppOut: Ptr = wasm.pstack.allocPtr();
      const rc = capi.sqlite3changeset_invert(bytes.length, p, pnOut, ppOut);
      if (rc !== 0) return rc;
      const n = Number(wasm.peek32(pnOut));
      const q = Number(wasm.peekPtr(ppOut));
      const out = wasm.heap8u().slice(q, q + n);
      if (q !== 0) capi.sqlite3_free(q as Ptr);
      return out;
    } finally {
      wasm.pstack.restore(sp);
    }
  });
}

export interface SqliteChange {
  table: string;
  op: number;
  indirect: number;
  old: unknown[] | undefined;
  new: unknown[] | undefined;
}

/** Walk with sqlite3changeset_start/next: rc 0 if SQLite's iterator accepts every byte, with what it saw. */
export function sqliteIterate(bytes: Uint8Array): { rc: number; changes: SqliteChange[] } {
  return withWasmCopy(bytes, (p) => {
    const sp = wasm.pstack.pointer;
    const changes: SqliteChange[] = [];
    try {
      const ppIter: Ptr = wasm.pstack.allocPtr();
      let rc = capi.sqlite3changeset_start(ppIter, bytes.length, p);
      if (rc !== 0) return { rc, changes };
      const it: Ptr = wasm.peekPtr(ppIter);
      const [pzTab, pnCol, pOp, pInd] = wasm.pstack.allocPtr(4) as Ptr[];
      while ((rc = capi.sqlite3changeset_next(it)) === capi.SQLITE_ROW) {
        capi.sqlite3changeset_op(it, pzTab, pnCol, pOp, pInd);
        const nCol = Number(wasm.peek32(pnCol));
        const op = Number(wasm.peek32(pOp));
        const read = (f: (it: Ptr, i: number) => unknown): unknown[] => Array.from({ length: nCol }, (_, i) => f(it, i));
        changes.push({
          table: wasm.cstrToJs(wasm.peekPtr(pzTab) as Ptr) ?? "",
          op,
          indirect: Number(wasm.peek32(pInd)),
          old: op === capi.SQLITE_INSERT ? undefined : read(capi.sqlite3changeset_old_js),
          new: op === capi.SQLITE_DELETE ? undefined : read(capi.sqlite3changeset_new_js),
        });
      }
      const rcFinal = capi.sqlite3changeset_finalize(it);
      return { rc: rc === capi.SQLITE_DONE ? rcFinal : rc, changes };
    } finally {
      wasm.pstack.restore(sp);
    }
  });
}

/**
 * The fuzzer's fast path: whether sqlite3changeset_start/next/finalize get
 * through every byte (rc 0), and how many changes they yielded. Values are
 * not read out (sqlite3changeset_next has already parsed them), and the input
 * buffer and out-pointer are allocated once.
 */
export function sqliteParse(bytes: Uint8Array): { rc: number; changes: number } {
  if (bytes.length > scratchSize) {
    if (scratch !== 0) wasm.dealloc(scratch);
    scratchSize = Math.max(bytes.length, scratchSize * 2);
    scratch = wasm.alloc(scratchSize);
  }
  wasm.heap8u().set(bytes, Number(scratch));
  let rc = capi.sqlite3changeset_start(ppIter, bytes.length, scratch);
  if (rc !== 0) return { rc, changes: 0 };
  const it: Ptr = wasm.peekPtr(ppIter);
  let changes = 0;
  while ((rc = capi.sqlite3changeset_next(it)) === capi.SQLITE_ROW) changes++;
  const rcFinal = capi.sqlite3changeset_finalize(it);
  return { rc: rc === capi.SQLITE_DONE ? rcFinal : rc, changes };
}
let scratchSize = 4096;
let scratch: Ptr = wasm.alloc(scratchSize);
const ppIter: Ptr = wasm.alloc(8);
