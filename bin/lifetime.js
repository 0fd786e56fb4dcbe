// The CLI's `compact`, `export` and `status` (README "Lifetime of a database").
// Plain JS over the compiled client, like the rest of bin/: a snapshot is
// built by a real replica (the same apply that syncs), never by the CLI.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { httpTransport, openReplica } from "../dist/client/index.js";
import { TokenSource } from "../dist/client/token.js";
import { snapshotClient } from "../dist/client/transport/snapshots.js";

/**
 * @param {"compact" | "export" | "status"} command
 * @param {{ url: string, db: string, token: import("../dist/client/token.js").TokenOption, at?: string | undefined, out?: string | undefined }} o
 *   token: a string, or a function called for a fresh one (as a replica's)
 * @returns {Promise<number>}
 */
export async function lifetime(command, o) {
  const tokens = new TokenSource(o.token);
  await tokens.init();
  try {
    return await run(command, o, tokens);
  } finally {
    tokens.close();
  }
}

/**
 * @param {"compact" | "export" | "status"} command
 * @param {{ url: string, db: string, token: import("../dist/client/token.js").TokenOption, at?: string | undefined, out?: string | undefined }} o
 * @param {TokenSource} tokens
 * @returns {Promise<number>}
 */
async function run(command, o, tokens) {
  const auth = { token: () => tokens.current(), refreshToken: () => tokens.refresh() };
  const relay = snapshotClient({ url: o.url, db: o.db, ...auth });
  if (command === "status") {
    const s = await relay.status();
    console.log(`head ${s.head}, oldest retained seq ${s.trimmed + 1} (trimmed through ${s.trimmed})`);
    console.log(`entries ${s.entries} (${s.entryBytes} bytes), snapshots ${s.snapshotBytes} bytes, connected sockets ${s.sockets}`);
    for (const x of s.snapshots) console.log(`snapshot seq ${x.seq} v${x.version} ${x.size} bytes sha256 ${x.hash} agreeing subs ${x.agreeing}${x.flagged ? " FLAGGED (another replica reported a different hash)" : ""}`);
    return 0;
  }
  if (command === "compact") {
    const r = await openReplica({ url: o.url, db: o.db, token: o.token, driver: "node" });
    try {
      await r.sync();
      const snap = await r.snapshot();
      const info = await relay.upload(snap);
      const res = await relay.compact();
      console.log(`snapshot at seq ${info.seq} (${info.size} bytes, sha256 ${info.hash}, ${info.agreeing} agreeing subs); log trimmed through seq ${res.trimmed} (${res.entries} entries, ${res.snapshots} older snapshots deleted)`);
      return 0;
    } finally {
      await r.close();
    }
  }
  const at = Number(o.at);
  if (!o.out || !Number.isSafeInteger(at) || at < 0) throw new Error("export needs --at SEQ (a non-negative integer) and --out FILE");
  const s = await relay.status();
  if (at < s.trimmed) throw new Error(`seq ${at} is older than what the relay retains: entries through seq ${s.trimmed} were compacted into a snapshot (export a seq from ${s.trimmed} to ${s.head})`);
  if (at > s.head) throw new Error(`seq ${at} is past the log's head ${s.head}`);
  const dir = mkdtempSync(join(tmpdir(), "changeset-relay-export-"));
  try {
    const http = httpTransport({ url: o.url, db: o.db, ...auth });
    /** @type {import("../dist/client/index.js").Transport} */
    const transport = {
      push: http.push,
      // The log up to `at` and no further.
      async pull(after, limit, signal) {
        if (after >= at) return { entries: [], head: at, more: false };
        const page = await http.pull(after, Math.min(limit ?? 1000, at - after), signal);
        const entries = page.entries.filter((e) => e.seq <= at);
        return { ...page, entries, head: at, more: (entries.at(-1)?.seq ?? after) < at && page.more };
      },
    };
    // The snapshot it starts from: the newest at or below `at`.
    /** @type {typeof fetch} */
    const fetchAt = (input, init) => {
      const url = new URL(String(input));
      if (url.pathname.endsWith("/snapshot")) url.searchParams.set("at", String(at));
      return fetch(url, init);
    };
    const file = join(dir, "replica.db");
    const r = await openReplica({ url: o.url, db: o.db, token: o.token, driver: "node", path: file, transport, fetch: fetchAt, readOnly: true });
    try {
      await r.sync();
      if (r.status().cursor !== at) throw new Error(`reached seq ${r.status().cursor}, not ${at}`);
    } finally {
      await r.close();
    }
    // The replica's own tables go; what is left is the app's database.
    const d = new DatabaseSync(file);
    try {
      const own = d.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE '\\_relay\\_%' ESCAPE '\\'").all();
      for (const { name } of own) d.exec(`DROP TABLE "${String(name).replace(/"/g, '""')}"`);
      rmSync(o.out, { force: true });
      d.prepare("VACUUM INTO ?").run(o.out);
    } finally {
      d.close();
    }
    console.log(`wrote ${o.out}: the state at seq ${at}`);
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
