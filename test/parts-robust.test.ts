import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { httpTransport, RelayError, type Replica } from "../client/index.ts";
import { decode } from "../protocol/codec.ts";
import type { EntryPart, PullResponse } from "../protocol/messages.ts";
import { insertChangeset, pull } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";
import { dump, replica } from "./support/replicas.ts";

/**
 * Transactions of any size where a deployment could lose or strand one
 * (issue 18, second round), through a real relay that keeps its storage
 * across restarts, so a test can reconfigure it: requests of 1 MiB and parts
 * of 64 KiB unless a test says otherwise.
 */
const BODY = 1024 * 1024;
const PART = 64 * 1024;
const DEFAULTS = { MAX_BODY_BYTES: String(BODY), PART_BYTES: String(PART) };
const bindings: Record<string, string> = { ...DEFAULTS };
const relay = useRelay({ bindings, persist: true, samePort: true });

/** Restart the relay (same storage, same port) with other settings. */
async function reconfigure(settings: Record<string, string>): Promise<void> {
  Object.assign(bindings, settings);
  await relay.stop();
  await relay.start();
  const h = (await (await fetch(`${relay.url}/v1/health`)).json()) as { limits: { partBytes: number } };
  assert.equal(h.limits.partBytes, Math.min(Number(bindings.PART_BYTES), Number(bindings.MAX_BODY_BYTES) - 4096), "reconfigured");
}

/** ~2 MB in one transaction: rows of 1.1 KB of random text (incompressible). */
async function bigWrite(r: Replica, n = 1500, prefix = "r"): Promise<void> {
  await r.transaction(async (tx) => {
    for (let i = 0; i < n; i++) await tx.exec("INSERT INTO todo(id, title, note) VALUES (?, ?, ?)", [`${prefix}${String(i).padStart(5, "0")}`, randomBytes(512).toString("base64"), randomBytes(200).toString("hex")]);
  });
}

async function putPart(db: string, token: string, cseq: number, size: number, idx: number, data: Uint8Array) {
  const res = await fetch(`${relay.url}/v1/db/${db}/push/w/${cseq}/parts/${idx}?size=${size}&v=0`, { method: "PUT", body: data as Uint8Array<ArrayBuffer>, headers: { authorization: `Bearer ${token}` } });
  const bytes = new Uint8Array(await res.arrayBuffer());
  return { status: res.status, body: res.ok ? (decode(bytes) as { acks: { cseq: number; seq: number }[] }) : JSON.parse(new TextDecoder().decode(bytes)).error };
}

const partsOf = (bytes: Uint8Array) => Array.from({ length: Math.ceil(bytes.byteLength / PART) }, (_, i) => bytes.subarray(i * PART, (i + 1) * PART));
const rows = (n: number, text: string) => Array.from({ length: n }, (_, i) => [i, text.repeat(200) + i] as [number, unknown]);

describe("a relay reconfigured under a client", () => {
  it("takes parts cut for its old part size, also of an upload staged before; a body limit below them is re-learned and the entry re-cut", async () => {
    const db = relay.db("reconf");
    const token = await relay.token("write", "a-reconf", db);
    const real = httpTransport({ url: relay.url, db, token });
    let stop: AbortController | undefined;
    const cuts: number[] = [];
    const transport = { ...real, pushPart: async (client: string, part: EntryPart, s?: AbortSignal) => {
      cuts.push(part.part ?? 0);
      // The upload stops half staged (the app closed, say): parts 0..2 are on the relay.
      if (part.idx === 3 && stop) stop.abort();
      return real.pushPart!(client, part, s);
    } };
    /** Stage A's next entry in part, reconfigure the relay (nothing in flight), sync again. */
    const halfThenReconfigure = async (settings: Record<string, string>) => {
      stop = new AbortController();
      await assert.rejects(A.sync(stop.signal), (e: unknown) => e instanceof RelayError && e.code === "aborted");
      stop = undefined;
      await reconfigure(settings);
      await A.sync();
      assert.equal(A.status().pending, 0);
      assert.equal(A.status().blocked, null);
    };
    const A = await replica(relay, db, "a-reconf", "node", { transport });
    try {
      await A.sync(); // learns parts of 64 KiB
      // A smaller part size: A's 64 KiB parts still fit a request.
      await bigWrite(A, 800, "a");
      await halfThenReconfigure({ PART_BYTES: String(PART / 2) });
      assert.deepEqual([...new Set(cuts)], [PART], "cut as learned at first");
      // A body limit below A's remembered parts: re-learned, re-cut.
      cuts.length = 0;
      await bigWrite(A, 800, "b");
      await halfThenReconfigure({ MAX_BODY_BYTES: String(48 * 1024) });
      assert.deepEqual([...new Set(cuts)], [PART, PART / 2], "re-cut after the refusal");
      // Small writes in one push pass the new body limit: cut into requests it takes.
      for (let i = 0; i < 100; i++) await A.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`s${i}`, randomBytes(400).toString("hex")]);
      await A.sync();
      assert.equal(A.status().pending, 0);
      const B = await replica(relay, db, "b-reconf", "wasm");
      await B.sync();
      assert.equal(await dump(B), await dump(A));
      assert.equal((await B.query<{ n: number }>("SELECT count(*) AS n FROM todo")).at(0)!.n, 1700);
    } finally {
      await reconfigure(DEFAULTS);
    }
  });
});

describe("a pull without parts=1 (an older client)", () => {
  it("gets entries whole up to what a request (or a page, 8 MiB) carries, then upgrade_required for a larger one instead of a response holding it", async () => {
    const db = relay.db("older");
    const A = await replica(relay, db, "a-older", "node");
    await A.sync();
    await A.exec("INSERT INTO todo(id, title) VALUES ('before', 'small')");
    await A.sync();
    await bigWrite(A, 8500); // ~9.4 MB
    await A.exec("INSERT INTO todo(id, title) VALUES ('after', 'small')");
    await A.sync();
    const token = await relay.token("read", "reader", db);
    const first = await pull(relay.url, db, token);
    assert.equal(first.status, 200);
    assert.deepEqual(first.body.entries.map((e: { cseq: number }) => e.cseq), [0, 1], "the page ends before the large entry");
    assert.equal(first.body.more, true);
    const refused = await pull(relay.url, db, token, first.body.entries.at(-1).seq);
    assert.equal(refused.status, 426);
    assert.equal(refused.body.error.code, "upgrade_required");
    assert.match(refused.body.error.message, /upgrade this client to one that pulls in parts/);
    // A client pulling in parts reads it all.
    const B = await replica(relay, db, "b-older", "wasm");
    await B.sync();
    assert.equal(await dump(B), await dump(A));
  });
});

describe("parts validated as they arrive", () => {
  const bad = () => {
    const cs = insertChangeset(rows(1000, "v"));
    // In the third part, a change's indirect flag (after INSERT 0x12, before the INTEGER key's type 0x01) set to 5.
    let pos = 2 * PART + 100;
    while (!(cs[pos] === 0x12 && cs[pos + 1] === 0 && cs[pos + 2] === 0x01)) pos++;
    cs[pos + 1] = 5;
    return cs;
  };

  it("a broken part is refused as soon as the parts before it are in, in whatever order they came", async () => {
    const db = relay.db("early");
    const token = await relay.token("write", "w", db);
    const cs = bad();
    const parts = partsOf(cs);
    assert.ok(parts.length >= 4);
    // In order: refused at part 2, not at the last.
    assert.equal((await putPart(db, token, 1, cs.byteLength, 0, parts[0]!)).status, 200);
    assert.equal((await putPart(db, token, 1, cs.byteLength, 1, parts[1]!)).status, 200);
    const refused = await putPart(db, token, 1, cs.byteLength, 2, parts[2]!);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.code, "malformed_changeset");
    assert.match(refused.body.message, /part 2/);
    // Out of order: part 2 waits for the ones before it; the part that lines it up is refused, naming it.
    assert.equal((await putPart(db, token, 1, cs.byteLength, 2, parts[2]!)).status, 200);
    assert.equal((await putPart(db, token, 1, cs.byteLength, 0, parts[0]!)).status, 200);
    const late = await putPart(db, token, 1, cs.byteLength, 1, parts[1]!);
    assert.equal(late.body.code, "malformed_changeset");
    assert.match(late.body.message, /part 2/);
    assert.deepEqual((await pull(relay.url, db, token)).body.entries, []);
  });

  it("a valid entry sent backwards lands when its first part arrives, byte-identical", async () => {
    const db = relay.db("backwards");
    const token = await relay.token("write", "w", db);
    const cs = insertChangeset(rows(1000, "v"));
    const parts = partsOf(cs);
    for (let i = parts.length - 1; i > 0; i--) assert.deepEqual((await putPart(db, token, 1, cs.byteLength, i, parts[i]!)).body.acks, []);
    assert.deepEqual((await putPart(db, token, 1, cs.byteLength, 0, parts[0]!)).body.acks, [{ cseq: 1, seq: 1 }]);
    const page = await fetch(`${relay.url}/v1/db/${db}/pull?after=0&parts=1`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal((decode(new Uint8Array(await page.arrayBuffer())) as PullResponse).entries[0]!.size, cs.byteLength);
    const whole = new Uint8Array(cs.byteLength);
    for (let i = 0; i < parts.length; i++) {
      whole.set(new Uint8Array(await (await fetch(`${relay.url}/v1/db/${db}/entries/1/parts/${i}`, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer()), i * PART);
    }
    assert.deepEqual(whole, cs);
  });

  it("a part sent again with other bytes (a recaptured entry) starts the upload over: never an entry mixing two captures", async () => {
    const db = relay.db("mixed");
    const token = await relay.token("write", "w", db);
    const x = insertChangeset(rows(1000, "x"));
    const y = insertChangeset(rows(1000, "y"));
    assert.equal(x.byteLength, y.byteLength);
    const [px, py] = [partsOf(x), partsOf(y)];
    for (let i = 0; i < px.length - 1; i++) assert.equal((await putPart(db, token, 1, x.byteLength, i, px[i]!)).status, 200);
    assert.equal((await putPart(db, token, 1, y.byteLength, 1, py[1]!)).status, 200);
    // x's parts went with the restart: y's last part completes nothing.
    assert.deepEqual((await putPart(db, token, 1, y.byteLength, py.length - 1, py.at(-1)!)).body.acks, []);
    assert.deepEqual((await pull(relay.url, db, token)).body.entries, []);
    let last;
    for (const [i, p] of py.entries()) last = await putPart(db, token, 1, y.byteLength, i, p);
    assert.deepEqual(last!.body.acks, [{ cseq: 1, seq: 1 }]);
    const got = new Uint8Array(y.byteLength);
    for (let i = 0; i < py.length; i++) got.set(new Uint8Array(await (await fetch(`${relay.url}/v1/db/${db}/entries/1/parts/${i}`, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer()), i * PART);
    assert.deepEqual(got, y);
  });
});

describe("a client that gives an upload up", () => {
  it("is not held back by what it staged: after discardBlocked its next write goes through", async () => {
    const db = relay.db("discard");
    const token = await relay.token("write", "a-discard", db);
    const real = httpTransport({ url: relay.url, db, token });
    // A token that may no longer write, from part 3 on: the Worker refuses (403) before the object sees the part.
    const reader = httpTransport({ url: relay.url, db, token: await relay.token("read", "a-discard", db) });
    let forbidden = true;
    const transport = { ...real, pushPart: (client: string, part: EntryPart, s?: AbortSignal) => (forbidden && part.idx >= 3 ? reader : real).pushPart!(client, part, s) };
    const A = await replica(relay, db, "a-discard", "node", { transport });
    await A.sync();
    await bigWrite(A);
    await assert.rejects(A.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden");
    assert.equal(A.status().blocked?.code, "forbidden");
    forbidden = false;
    assert.equal(await A.discardBlocked(), 1);
    await A.exec("INSERT INTO todo(id, title) VALUES ('next', 'small')");
    await A.sync();
    assert.equal(A.status().pending, 0);
    assert.equal(A.status().blocked, null);
    const B = await replica(relay, db, "b-discard", "wasm");
    await B.sync();
    assert.equal(await dump(B), await dump(A));
    assert.deepEqual(await B.query("SELECT id FROM todo"), [{ id: "next" }]);
  });
});

describe("a client pulling large entries", () => {
  it("holds one at a time: after a page with an entry larger than a part, the next page is asked for once it applied", async () => {
    const db = relay.db("memory");
    const A = await replica(relay, db, "a-memory", "node");
    await A.sync();
    for (const p of ["a", "b", "c"]) {
      await bigWrite(A, 600, p);
      await A.sync();
    }
    const token = await relay.token("write", "b-memory", db);
    const real = httpTransport({ url: relay.url, db, token });
    let B: Replica | undefined;
    let held: number | undefined; // the last seq of a page holding a large entry, until B applied it
    let overlaps = 0;
    let pages = 0;
    const transport = { ...real, pull: async (after: number, limit?: number, s?: AbortSignal) => {
      if (held !== undefined && (B?.status().cursor ?? 0) < held) overlaps++;
      const page = await real.pull(after, limit, s);
      pages++;
      held = page.entries.some((e) => e.changeset.byteLength > PART) ? page.entries.at(-1)!.seq : undefined;
      return page;
    } };
    B = await replica(relay, db, "b-memory", "wasm", { transport });
    await B.sync();
    assert.ok(pages >= 3, `${pages} pages`);
    assert.equal(overlaps, 0, "no page asked for while one holding a large entry waited to apply");
    assert.equal(await dump(B), await dump(A));
  });
});
