import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { httpTransport, RelayError, type Replica } from "../client/index.ts";
import type { DriverKind } from "../client/drivers/types.ts";
import { decode } from "../protocol/codec.ts";
import { changesetTables, validateChangeset } from "../protocol/changeset.ts";
import { ChangesetStream } from "../protocol/changeset-stream.ts";
import { RelayError as WireError } from "../protocol/errors.ts";
import { DatabaseSync } from "node:sqlite";
import * as store from "../worker/log-store.ts";
import * as entryParts from "../worker/entry-parts.ts";
import { UPLOAD_TTL_MS } from "../worker/staging.ts";
import * as snaps from "../worker/snapshot-store.ts";
import { sha256Hex } from "../protocol/hash.ts";
import { doSql } from "./support/do-sql.ts";
import { maxEntryBytes } from "../protocol/limits.ts";
import type { EntryPart } from "../protocol/messages.ts";
import { insertChangeset, pull, pullAll, push } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";
import { dump, replica } from "./support/replicas.ts";
import { until } from "./support/wait.ts";

/**
 * Transactions of any size (issue 18), through a real relay: an entry larger
 * than one request goes up in parts and lands as one log entry, comes down in
 * parts, and applies. The relay takes requests of 1 MiB here and parts of
 * 64 KiB, so entries of a few MB exercise every path quickly (and the old
 * relay and client refused them at commit).
 */
const BODY = 1024 * 1024;
const PART = 64 * 1024;
const relay = useRelay({ bindings: { MAX_BODY_BYTES: String(BODY), PART_BYTES: String(PART) } });

/** ~3 MB in one transaction: rows of 1.5 KB of random text (incompressible, so gzip does not shrink the parts away). */
async function bigWrite(r: Replica, n = 2000, prefix = "r"): Promise<void> {
  await r.transaction(async (tx) => {
    for (let i = 0; i < n; i++) await tx.exec("INSERT INTO todo(id, title, note) VALUES (?, ?, ?)", [`${prefix}${String(i).padStart(5, "0")}`, randomBytes(512).toString("base64"), randomBytes(600).toString("hex")]);
  });
}

const outboxBytes = async (r: Replica) => (await r.query<{ changeset: Uint8Array }>("SELECT changeset FROM _relay_outbox ORDER BY cseq")).map((x) => x.changeset);

async function putPart(db: string, token: string, client: string, cseq: number, size: number, idx: number, data: Uint8Array) {
  const res = await fetch(`${relay.url}/v1/db/${db}/push/${client}/${cseq}/parts/${idx}?size=${size}&v=0`, {
    method: "PUT",
    body: data as Uint8Array<ArrayBuffer>,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  return { status: res.status, body: res.ok ? (decode(bytes) as { acks: { cseq: number; seq: number }[]; head: number }) : JSON.parse(new TextDecoder().decode(bytes)).error };
}

/** The whole log as a client pulling in parts sees it (entries listed by size fetched part by part). */
async function logInParts(db: string, token: string): Promise<{ seq: number; cseq: number; changeset: Uint8Array }[]> {
  const get = async (path: string) => new Uint8Array(await (await fetch(`${relay.url}/v1/db/${db}${path}`, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer());
  const out = [];
  for (let after = 0, more = true; more; ) {
    const page = decode(await get(`/pull?after=${after}&parts=1`)) as { entries: { seq: number; cseq: number; size?: number; changeset: Uint8Array }[]; more: boolean };
    for (const e of page.entries) {
      if (e.size !== undefined) {
        e.changeset = new Uint8Array(e.size);
        for (let i = 0; i * PART < e.size; i++) e.changeset.set(await get(`/entries/${e.seq}/parts/${i}`), i * PART);
      }
      out.push({ seq: e.seq, cseq: e.cseq, changeset: new Uint8Array(e.changeset) });
      after = e.seq;
    }
    more = page.more;
  }
  return out;
}

const partsOf = (bytes: Uint8Array) => Array.from({ length: Math.ceil(bytes.byteLength / PART) }, (_, i) => bytes.subarray(i * PART, (i + 1) * PART));

describe("an entry larger than one request", () => {
  for (const [a, b] of [["node", "wasm"], ["wasm", "node"]] as [DriverKind, DriverKind][]) {
    it(`goes up in parts as one entry and comes down in parts, byte-identical (${a} → ${b})`, async () => {
      const db = relay.db(`round-${a}`);
      const A = await replica(relay, db, `a-${a}`, a);
      const B = await replica(relay, db, `b-${a}`, b);
      await A.sync(); // learns the relay's limits
      await bigWrite(A);
      const [captured] = await outboxBytes(A);
      assert.ok(captured!.byteLength > 2 * BODY, `the entry (${captured!.byteLength} bytes) is larger than a request`);
      await A.exec("INSERT INTO todo(id, title) VALUES ('after', 'next entry')");
      await A.sync();
      assert.equal(A.status().pending, 0);
      const token = await relay.token("read", "reader", db);
      // The log holds exactly the captured bytes, then the next entry (an older client's pull, without parts=1, stops before it: parts-robust.test.ts).
      const data = (await logInParts(db, token)).filter((e) => e.cseq > 0);
      assert.deepEqual(data.map((e) => e.cseq), [1, 2], "one entry for the transaction, in order with the next");
      assert.deepEqual(data[0]!.changeset, captured);
      // A pull in parts lists it by size and ends the page there.
      const listed = await fetch(`${relay.url}/v1/db/${db}/pull?after=0&parts=1`, { headers: { authorization: `Bearer ${token}` } });
      const page = decode(new Uint8Array(await listed.arrayBuffer())) as { entries: { cseq: number; size?: number; changeset: Uint8Array }[]; more: boolean };
      const big = page.entries.at(-1)!;
      assert.equal(big.size, captured!.byteLength);
      assert.equal(big.changeset.byteLength, 0);
      assert.equal(page.more, true);
      await B.sync();
      assert.equal(await dump(B), await dump(A));
      assert.equal((await B.query<{ n: number }>("SELECT count(*) AS n FROM todo"))[0]!.n, 2001);
    });
  }

  it("over the live socket: the writer pushes it in parts over HTTP, a live reader hears the head and pulls it in parts", async () => {
    const db = relay.db("live");
    const A = await replica(relay, db, "a-live", "node", { live: true });
    const B = await replica(relay, db, "b-live", "wasm", { live: true });
    await until(() => A.status().connected && B.status().connected, "both connected");
    await A.sync();
    await bigWrite(A, 1500);
    await A.exec("INSERT INTO todo(id, title) VALUES ('after', 'live')");
    await until(async () => A.status().pending === 0 && B.status().cursor === A.status().cursor && B.status().cursor > 0, "B caught up live", 20_000);
    assert.equal(await dump(B), await dump(A));
    assert.equal((await B.query<{ n: number }>("SELECT count(*) AS n FROM todo"))[0]!.n, 1501);
    // Subscribing later: the backlog names the entry by size (never read for a frame), a head frame sends C to HTTP.
    const C = await replica(relay, db, "c-live", "node", { live: true });
    await until(() => C.status().cursor === A.status().cursor, "C caught up from its subscription", 20_000);
    assert.equal(await dump(C), await dump(A));
  });

  it("answers lost after the relay stored a part (a middle one, the last one) are retried safely: one entry, once", async () => {
    const db = relay.db("lost");
    const token = await relay.token("write", "a-lost", db);
    const real = httpTransport({ url: relay.url, db, token });
    const lost = new Set([1, -1]); // part 1, and the last part (-1), each once
    let parts = 0;
    const lossy = { ...real, pushPart: async (client: string, part: EntryPart, s?: AbortSignal) => {
      const res = await real.pushPart!(client, part, s);
      parts++;
      const last = part.idx === Math.ceil(part.size / PART) - 1;
      for (const k of [part.idx, last ? -1 : NaN]) if (lost.delete(k)) throw new RelayError("network", "connection lost while reading the response");
      return res;
    } };
    const A = await replica(relay, db, "a-lost", "node", { transport: lossy });
    await A.sync();
    await bigWrite(A, 1200);
    const [captured] = await outboxBytes(A);
    await A.sync();
    assert.equal(lost.size, 0, "both answers were lost");
    assert.equal(parts, Math.ceil(captured!.byteLength / PART) + 2, "two parts went twice");
    assert.equal(A.status().pending, 0);
    const log = (await logInParts(db, token)).filter((e) => e.cseq > 0);
    assert.equal(log.length, 1);
    assert.deepEqual(log[0]!.changeset, captured);
    const B = await replica(relay, db, "b-lost", "wasm");
    await B.sync();
    assert.equal(await dump(B), await dump(A));
  });

  it("is refused at commit when the relay takes no parts (an older relay), and when one row passes a request", async () => {
    const db = relay.db("old");
    const token = await relay.token("write", "a-old", db);
    const real = httpTransport({ url: relay.url, db, token });
    const older = { ...real, health: async (s?: AbortSignal) => {
      const h = await real.health!(s);
      return { ...h, limits: { maxEntryBytes: h.limits!.maxEntryBytes } };
    } };
    const A = await replica(relay, db, "a-old", "node", { transport: older });
    await A.sync();
    await assert.rejects(bigWrite(A), (e: unknown) => e instanceof RelayError && e.code === "write_too_large");
    assert.equal(A.status().pending, 0);
    const B = await replica(relay, db, "b-old", "node");
    await B.sync();
    const row = new Uint8Array(BODY).fill(1);
    await assert.rejects(B.exec("INSERT INTO todo(id, title, note) VALUES ('x', 'y', ?)", [row]), (e: unknown) => e instanceof RelayError && e.code === "write_too_large" && /per row/.test(e.message));
    await bigWrite(B); // many rows: fine
    await B.sync();
    assert.equal(B.status().pending, 0);
  });
});

describe("parts on the wire", () => {
  const rows = (n: number, from = 0) => Array.from({ length: n }, (_, i) => [from + i, "v".repeat(200) + i] as [number, unknown]);

  it("a part sent again is the same part; once the entry landed, a part answers with its seq, other bytes are cseq_conflict", async () => {
    const db = relay.db("idem");
    const token = await relay.token("write", "w", db);
    const cs = insertChangeset(rows(1000));
    const parts = partsOf(cs);
    assert.ok(parts.length >= 3);
    for (const [i, p] of parts.entries()) {
      const r = await putPart(db, token, "w", 1, cs.byteLength, i, p);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      if (i === 0) assert.deepEqual((await putPart(db, token, "w", 1, cs.byteLength, 0, p)).body.acks, [], "part 0 again: nothing lands yet");
      assert.equal(r.body.acks.length, i === parts.length - 1 ? 1 : 0);
    }
    const last = await putPart(db, token, "w", 1, cs.byteLength, parts.length - 1, parts.at(-1)!);
    assert.deepEqual(last.body.acks, [{ cseq: 1, seq: 1 }], "a retried last part (lost answer): the original seq");
    const first = await putPart(db, token, "w", 1, cs.byteLength, 0, parts[0]!);
    assert.deepEqual(first.body.acks, [{ cseq: 1, seq: 1 }]);
    const other = parts[1]!.slice();
    other[10]! ^= 1;
    assert.equal((await putPart(db, token, "w", 1, cs.byteLength, 1, other)).body.code, "cseq_conflict");
    const log = await pullAll(relay.url, db, token);
    assert.equal(log.length, 1);
    assert.deepEqual(new Uint8Array(log[0].changeset), cs);
  });

  it("an interrupted upload leaves the log unchanged; the client's next cseq means it gave the upload up", async () => {
    const db = relay.db("interrupted");
    const token = await relay.token("write", "w", db);
    const cs = insertChangeset(rows(1000));
    const parts = partsOf(cs);
    for (let i = 0; i < parts.length - 1; i++) assert.equal((await putPart(db, token, "w", 1, cs.byteLength, i, parts[i]!)).status, 200);
    assert.deepEqual((await pull(relay.url, db, token)).body.entries, []);
    assert.equal((await push(relay.url, db, token, "w", [{ cseq: 2, changeset: insertChangeset(rows(1, 5000)) }])).status, 200);
    // Cleared with it: its last part starts nothing (cseq 1 is below the client's highest now).
    assert.equal((await putPart(db, token, "w", 1, cs.byteLength, parts.length - 1, parts.at(-1)!)).body.code, "cseq_conflict");
    assert.deepEqual((await pullAll(relay.url, db, token)).map((e) => e.cseq), [2]);
  });

  it("a bad changeset split across parts is refused at the part that shows it: the log is unchanged and the staging gone", async () => {
    const db = relay.db("bad");
    const token = await relay.token("write", "w", db);
    const cs = insertChangeset(rows(1000));
    validateChangeset(cs);
    const bad = cs.slice();
    // In the third part, a change's indirect flag (after INSERT 0x12, before the INTEGER key's type 0x01) set to 5.
    let pos = 2 * PART + 100;
    while (!(bad[pos] === 0x12 && bad[pos + 1] === 0 && bad[pos + 2] === 0x01)) pos++;
    bad[pos + 1] = 5;
    assert.throws(() => validateChangeset(bad));
    const parts = partsOf(bad);
    assert.ok(parts.length > 3);
    for (const i of [0, 1]) assert.equal((await putPart(db, token, "w", 1, bad.byteLength, i, parts[i]!)).status, 200);
    const refused = await putPart(db, token, "w", 1, bad.byteLength, 2, parts[2]!);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.code, "malformed_changeset");
    assert.match(refused.body.message, /uploaded in parts\), part 2:/);
    assert.deepEqual((await pull(relay.url, db, token)).body.entries, []);
    // The staging went with the refusal: the other parts complete nothing.
    for (let i = 3; i < parts.length; i++) assert.deepEqual((await putPart(db, token, "w", 1, bad.byteLength, i, parts[i]!)).body.acks, []);
    assert.deepEqual((await pull(relay.url, db, token)).body.entries, []);
  });

  it("the schema rules hold for the whole entry: its version and every table's shape, checked at the first part", async () => {
    const db = relay.db("schema");
    const A = await replica(relay, db, "w", "node");
    await A.sync(); // the log is at version 1 (the todo table)
    const token = await relay.token("write", "w", db);
    const cs = insertChangeset(rows(1000)); // table t: not in the schema
    const send = async (v: number) => {
      let last;
      for (const [i, p] of partsOf(cs).entries()) {
        const res = await fetch(`${relay.url}/v1/db/${db}/push/w/1/parts/${i}?size=${cs.byteLength}&v=${v}`, { method: "PUT", body: p as Uint8Array<ArrayBuffer>, headers: { authorization: `Bearer ${token}` } });
        last = { status: res.status, text: await res.text(), part: i };
        if (!res.ok) break;
      }
      return last!;
    };
    const wrongShape = await send(1);
    assert.equal(wrongShape.status, 400, wrongShape.text);
    assert.match(wrongShape.text, /schema_mismatch.*no table/);
    assert.equal(wrongShape.part, 0);
    const outdated = await send(0);
    assert.match(outdated.text, /schema_outdated/);
    assert.equal(outdated.part, 0);
    assert.deepEqual((await pullAll(relay.url, db, token)).map((e) => e.cseq), [0], "the schema entry alone");
  });

  it("health names the part size and the per-entry limit; parts of the wrong size, or cut too small or too large, are refused", async () => {
    const h = (await (await fetch(`${relay.url}/v1/health`)).json()) as { limits: Record<string, number> };
    assert.deepEqual(h.limits, { maxEntryBytes: maxEntryBytes(BODY), partBytes: PART, maxPartedEntryBytes: 512 * 1024 * 1024 });
    const db = relay.db("sizes");
    const token = await relay.token("write", "w", db);
    const r = await putPart(db, token, "w", 1, 3 * PART, 0, new Uint8Array(PART - 1));
    assert.equal(r.status, 400);
    assert.equal((await putPart(db, token, "w", 1, 3 * PART, 0, new Uint8Array(PART + 1))).status, 400);
    // An upload names its own cut (parts-robust.test.ts): from the relay's part size (or 64 KiB) to a request.
    const cut = async (part: number, length: number) => (await fetch(`${relay.url}/v1/db/${db}/push/w/1/parts/0?size=${3 * PART}&v=0&part=${part}`, { method: "PUT", body: new Uint8Array(length), headers: { authorization: `Bearer ${token}` } })).status;
    assert.equal(await cut(PART / 2, PART / 2), 400);
    assert.equal(await cut(BODY, 1), 413);
    assert.equal(await cut(BODY, BODY), 413);
  });
});

describe("ChangesetStream (the relay's validation of a parted entry)", () => {
  const real = () => {
    const db = new DatabaseSync(":memory:");
    db.exec("CREATE TABLE a(id INTEGER PRIMARY KEY, t TEXT, b BLOB, r REAL); CREATE TABLE b(x TEXT, y INTEGER, z, PRIMARY KEY(y, x))");
    db.exec("INSERT INTO a VALUES (1, 'old', x'00', 1.5), (2, 'gone', NULL, 0)");
    const s = db.createSession();
    db.exec("BEGIN");
    for (let i = 3; i < 40; i++) db.prepare("INSERT INTO a VALUES (?, ?, ?, ?)").run(i, "t".repeat(i * 7), new Uint8Array(i * 3).fill(i), i / 3);
    db.exec("UPDATE a SET t = 'new' WHERE id = 1; DELETE FROM a WHERE id = 2");
    for (let i = 0; i < 20; i++) db.prepare("INSERT INTO b VALUES (?, ?, ?)").run(`k${i}`, i, i % 2 ? null : "z".repeat(300));
    db.exec("COMMIT");
    return s.changeset();
  };
  const feed = (bytes: Uint8Array, cuts: number[]) => {
    const st = new ChangesetStream(1 << 20);
    let from = 0;
    for (const c of [...cuts, bytes.byteLength]) {
      st.push(bytes.subarray(from, c));
      from = c;
    }
    st.end();
    return st.tables.map((t) => t.name);
  };

  it("accepts a valid changeset cut anywhere, once or twice, and finds its tables", () => {
    const cs = real();
    assert.deepEqual(changesetTables(cs).map((t) => t.name), ["a", "b"]);
    for (let i = 0; i <= cs.byteLength; i++) assert.deepEqual(feed(cs, [i]), ["a", "b"], `cut at ${i}`);
    for (let i = 0; i <= cs.byteLength; i += 97) for (let j = i; j <= cs.byteLength; j += 89) assert.deepEqual(feed(cs, [i, j]), ["a", "b"]);
  });

  it("refuses, cut anywhere, what validateChangeset refuses", () => {
    const cs = real();
    const broken: Uint8Array[] = [cs.subarray(0, cs.byteLength - 3), cs.subarray(1)];
    for (let at = 1; at < cs.byteLength && broken.length < 40; at += 53) {
      for (const v of [0x07, 0xff, 0x54]) {
        const b = cs.slice();
        b[at] = v;
        try {
          validateChangeset(b);
        } catch {
          broken.push(b);
        }
      }
    }
    assert.ok(broken.length > 8);
    for (const b of broken) {
      for (let i = 0; i <= b.byteLength; i += 11) {
        assert.throws(() => feed(b, [i]), (e: unknown) => e instanceof WireError && e.code === "malformed_changeset", `cut at ${i}`);
      }
    }
    assert.throws(() => feed(new Uint8Array(0), []), (e: unknown) => e instanceof WireError && e.code === "malformed_changeset");
  });

  it("holds at most one change across pieces: a larger one is refused", () => {
    const cs = real();
    const st = new ChangesetStream(100);
    assert.throws(() => {
      for (let i = 0; i < cs.byteLength; i += 10) st.push(cs.subarray(i, i + 10));
    }, (e: unknown) => e instanceof WireError && e.code === "payload_too_large");
  });
});

describe("staged uploads (worker/entry-parts.ts over a real SQLite)", () => {
  const fresh = () => {
    const sql = doSql();
    store.migrate(sql);
    return sql;
  };
  const opts = { partBytes: PART, maxChangeBytes: BODY, sub: "s" };
  const cs = insertChangeset(Array.from({ length: 1000 }, (_, i) => [i, "v".repeat(200)] as [number, unknown]));
  const put = (sql: ReturnType<typeof fresh>, client: string, idx: number, now: number) =>
    sql.transactionSync(() => entryParts.putPart(sql, client, { cseq: 1, v: 0, size: cs.byteLength, idx, data: partsOf(cs)[idx]! }, now, opts));
  // Staged chunks live under the key -id; the first upload of a fresh object is id 1.
  const staged = (sql: ReturnType<typeof fresh>, key: number) => sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_chunk WHERE seq = ?", key).one().n;

  it("an upload abandoned for UPLOAD_TTL_MS is cleared when another starts; its client's next cseq clears it at once", () => {
    const sql = fresh();
    put(sql, "w", 0, 1000);
    put(sql, "w", 1, 2000);
    assert.equal(staged(sql, -1), 2);
    put(sql, "other", 0, 2000 + UPLOAD_TTL_MS);
    assert.equal(staged(sql, -1), 2, "not abandoned yet");
    put(sql, "other", 1, 2000 + UPLOAD_TTL_MS + 1);
    assert.equal(staged(sql, -1), 0, "cleared");
    assert.equal(sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_upload WHERE client = 'w'").one().n, 0);
    put(sql, "x", 0, 0);
    const later = { cseq: 2, changeset: insertChangeset([[9999, "x"]]) };
    assert.deepEqual(sql.transactionSync(() => store.push(sql, "x", [later], 0)).acks, [{ cseq: 2, seq: 1 }]);
    assert.equal(sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_upload WHERE client = 'x'").one().n, 0);
    assert.equal(store.head(sql), 1, "nothing of the abandoned uploads reached the log");
    assert.equal(sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_chunk WHERE seq < 0").one().n, 2, "only other's upload is staged");
  });

  it("compaction behind a snapshot removes a parted entry's chunks, kept under their staging key", async () => {
    const sql = fresh();
    for (let i = 0; i < partsOf(cs).length; i++) put(sql, "w", i, 0);
    assert.equal(staged(sql, -1), partsOf(cs).length, "the entry's chunks stay where they were staged");
    assert.deepEqual(store.readRange(sql, 1, 5, 10), cs.subarray(5, 15));
    const snapshot = new Uint8Array([1, 2, 3]);
    const { id } = snaps.begin(sql, { seq: 1, version: 0, size: 3, hash: await sha256Hex(snapshot) }, "s", 0, 1);
    snaps.putPart(sql, id, 0, snapshot, "s");
    snaps.publish(sql, id, "s", await sha256Hex(snaps.seal(sql, id, "s")), 0);
    put(sql, "x", 0, 0); // an upload in progress (key -2): compaction must leave it alone
    assert.equal(snaps.compact(sql, 1, 1, { entries: 0, ms: 0, quorum: 1 }).entries, 1);
    assert.equal(staged(sql, -1), 0);
    assert.equal(staged(sql, -2), 1);
    assert.equal(sql.exec<{ n: number }>("SELECT count(*) AS n FROM relay_chunk").one().n, 1);
  });

  it("each part refreshes the upload: a slow upload is not abandoned while parts keep coming", () => {
    const sql = fresh();
    const n = partsOf(cs).length;
    let now = 0;
    for (let i = 0; i < n; i++) {
      const res = put(sql, "w", i, now);
      now += UPLOAD_TTL_MS - 1;
      put(sql, "other", 0, now); // another upload starts: clears only what is abandoned
      if (i === n - 1) assert.deepEqual(res.acks, [{ cseq: 1, seq: 1 }]);
    }
    assert.deepEqual(store.pull(sql, 0, 10).entries[0]!.changeset, cs);
  });
});
