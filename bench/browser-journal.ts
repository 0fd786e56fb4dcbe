/**
 * A Web Worker for the Chromium bench (bench/browser.ts): what one
 * single-row write transaction costs on the OPFS VFS the browser replica uses
 * (opfs-sahpool), under several journal settings, on sqlite-wasm directly
 * (no replica). W2 in the browser commits once per write on A and once per
 * step on each side, so this is its floor.
 */
import { installOpfsSahPool, loadSqliteWasm, openWasm } from "../client/drivers/wasm.ts";

/** In this order on one connection: exclusive locking and WAL, once set, stay. */
const SETTINGS: string[][] = [
  ["journal_mode=DELETE"], // what the browser replica runs today (SQLite's default)
  ["journal_mode=TRUNCATE"],
  ["journal_mode=PERSIST"],
  ["journal_mode=MEMORY"], // not crash-safe: for scale only
  ["locking_mode=EXCLUSIVE", "journal_mode=DELETE"],
  ["locking_mode=EXCLUSIVE", "journal_mode=WAL", "synchronous=FULL"],
  ["locking_mode=EXCLUSIVE", "journal_mode=WAL", "synchronous=NORMAL"],
];

self.onmessage = async (e: MessageEvent<{ commits: number }>) => {
  try {
    await loadSqliteWasm({ wasmUrl: new URL("./sqlite3.wasm", location.href).href });
    await installOpfsSahPool({ directory: ".bench-journal" });
    const out: { setting: string; msPerCommit: number }[] = [];
    const d = await openWasm("journal.sqlite3");
    d.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)");
    d.exec("INSERT OR REPLACE INTO t VALUES (1, 0)");
    for (const setting of SETTINGS) {
      for (const p of setting) d.exec(`PRAGMA ${p}`);
      const t0 = performance.now();
      for (let k = 0; k < e.data.commits; k++) {
        d.exec("BEGIN IMMEDIATE");
        d.run("UPDATE t SET v = ? WHERE id = 1", [k]);
        d.exec("COMMIT");
      }
      out.push({ setting: setting.join(", "), msPerCommit: (performance.now() - t0) / e.data.commits });
    }
    d.close();
    postMessage({ out });
  } catch (err) {
    postMessage({ error: String((err as Error)?.stack ?? err) });
  }
};
