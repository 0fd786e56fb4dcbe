import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encode } from "../protocol/codec.ts";
import { signToken } from "../protocol/token.ts";
import { startRelay, TEST_SECRET } from "./support/relay.ts";
import { insertChangeset, pull, pullAll, push, pushEarlyAnswer, pushRaw } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";

const relay = useRelay();
let admin: string;
before(async () => {
  admin = await relay.token("admin", "admin");
});

const cs = (id: number, v: unknown = `row ${id}`) => insertChangeset([[id, v]]);

describe("routes", () => {
  it("health reports ok and the protocol range", async () => {
    const res = await fetch(`${relay.url}/v1/health`);
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.ok, true);
    assert.equal(body.protocol.max, 1);
  });

  it("unknown routes are 404 not_found with the JSON error shape", async () => {
    const res = await fetch(`${relay.url}/v2/nothing`);
    assert.equal(res.status, 404);
    assert.deepEqual((await res.json()).error.code, "not_found");
  });

  it("refuses bad database names and bad pull parameters", async () => {
    const r = await pull(relay.url, "bad.name", admin);
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, "invalid_name");
    const r2 = await pull(relay.url, "ok", admin, -1 as number);
    assert.equal(r2.status, 400);
    assert.equal(r2.body.error.code, "bad_request");
    const long = await pull(relay.url, "x".repeat(65), admin);
    assert.equal(long.body.error.code, "invalid_name");
  });
});

describe("the log", () => {
  it("push then pull round-trips entries with gapless seq", async () => {
    const db = "roundtrip";
    const a = cs(1), b = cs(2);
    const r = await push(relay.url, db, admin, "c1", [{ cseq: 1, changeset: a }, { cseq: 2, changeset: b }]);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { acks: [{ cseq: 1, seq: 1 }, { cseq: 2, seq: 2 }], head: 2 });
    const p = await pull(relay.url, db, admin, 0);
    assert.equal(p.body.head, 2);
    assert.equal(p.body.more, false);
    assert.deepEqual(p.body.entries.map((e: any) => [e.seq, e.client, e.cseq]), [[1, "c1", 1], [2, "c1", 2]]);
    assert.deepEqual(new Uint8Array(p.body.entries[1].changeset), b);
    assert.ok(p.body.entries[0].ts > 1.7e12);
    const tail = await pull(relay.url, db, admin, 2);
    assert.deepEqual(tail.body, { entries: [], head: 2, more: false });
  });

  it("stays ordered and gapless under 20 concurrent pushers", async () => {
    const db = "concurrent";
    const perClient = 10;
    await Promise.all(
      Array.from({ length: 20 }, async (_, c) => {
        const token = await relay.token("write", `w${c}`, db);
        for (let k = 1; k <= perClient; k++) {
          const r = await push(relay.url, db, token, `w${c}`, [{ cseq: k, changeset: cs(c * 1000 + k) }]);
          assert.equal(r.status, 200, JSON.stringify(r.body));
        }
      }),
    );
    const all = await pullAll(relay.url, db, admin);
    assert.deepEqual(all.map((e) => e.seq), Array.from({ length: 200 }, (_, i) => i + 1));
    for (let c = 0; c < 20; c++) {
      const mine = all.filter((e) => e.client === `w${c}`).map((e) => e.cseq);
      assert.deepEqual(mine, Array.from({ length: perClient }, (_, i) => i + 1), `client w${c} entries in cseq order`);
    }
  });

  it("a retried push returns the original seq and adds nothing", async () => {
    const db = "idempotent";
    const entries = [{ cseq: 7, changeset: cs(1) }];
    const first = await push(relay.url, db, admin, "c", entries);
    await push(relay.url, db, admin, "other", [{ cseq: 1, changeset: cs(2) }]);
    const again = await push(relay.url, db, admin, "c", entries);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body.acks, first.body.acks);
    assert.equal(again.body.head, 2);
    assert.equal((await pullAll(relay.url, db, admin)).length, 2);
  });

  it("a reused cseq with other bytes, or a cseq below the highest, is 409 cseq_conflict", async () => {
    const db = "conflict";
    await push(relay.url, db, admin, "c", [{ cseq: 5, changeset: cs(1) }]);
    const reused = await push(relay.url, db, admin, "c", [{ cseq: 5, changeset: cs(2) }]);
    assert.equal(reused.status, 409);
    assert.equal(reused.body.error.code, "cseq_conflict");
    const lower = await push(relay.url, db, admin, "c", [{ cseq: 3, changeset: cs(3) }]);
    assert.equal(lower.status, 409);
    // All-or-nothing: the good first entry of a refused push is not kept.
    const mixed = await push(relay.url, db, admin, "c", [{ cseq: 6, changeset: cs(4) }, { cseq: 5, changeset: cs(5) }]);
    assert.equal(mixed.status, 400);
    const all = await pullAll(relay.url, db, admin);
    assert.deepEqual(all.map((e) => e.cseq), [5]);
  });

  it("pages by limit and by byte budget", async () => {
    const db = "paging";
    const big = insertChangeset([[1, new Uint8Array(3 * 1024 * 1024)]]);
    for (let k = 1; k <= 5; k++) {
      const r = await push(relay.url, db, admin, "c", [{ cseq: k, changeset: k <= 4 ? big : cs(k) }]);
      assert.equal(r.status, 200);
    }
    const byLimit = await pull(relay.url, db, admin, 0, 1);
    assert.equal(byLimit.body.entries.length, 1);
    assert.equal(byLimit.body.more, true);
    // 8 MiB budget: two 3 MiB entries fit, the third does not.
    const byBytes = await pull(relay.url, db, admin, 0, 100);
    assert.equal(byBytes.body.entries.length, 2);
    assert.equal(byBytes.body.more, true);
    assert.equal((await pullAll(relay.url, db, admin)).length, 5);
  });

  it("a 5 MB changeset is stored in chunks and served back byte-identical", async () => {
    const db = "big5";
    const blob = new Uint8Array(5 * 1024 * 1024).map((_, i) => (i * 7919) % 251);
    const big = insertChangeset([[1, blob], [2, "tail"]]);
    const r = await push(relay.url, db, admin, "c", [{ cseq: 1, changeset: big }]);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const [entry] = await pullAll(relay.url, db, admin);
    assert.equal(entry.changeset.byteLength, big.byteLength);
    assert.ok(Buffer.from(entry.changeset).equals(Buffer.from(big)));
    // Idempotency compares the chunked bytes too.
    assert.equal((await push(relay.url, db, admin, "c", [{ cseq: 1, changeset: big }])).body.acks[0].seq, 1);
  });
});

describe("body limit", () => {
  const blob40 = () => insertChangeset(Array.from({ length: 40 }, (_, i) => [i + 1, new Uint8Array(1024 * 1024).fill(i)]));

  it("refuses a 40 MB push with 413 under the default 32 MiB limit, log unchanged", async () => {
    const big = blob40();
    assert.ok(big.byteLength > 40 * 1024 * 1024);
    const r = await pushEarlyAnswer(relay.url, "big40", admin, encode({ client: "c", entries: [{ cseq: 1, changeset: big }] }));
    assert.equal(r.status, 413);
    assert.equal(r.body.error.code, "payload_too_large");
    assert.equal((await pull(relay.url, "big40", admin)).body.head, 0);
  });

  it("accepts and round-trips 40 MB when MAX_BODY_BYTES allows it", async () => {
    const wide = await startRelay({ bindings: { MAX_BODY_BYTES: String(64 * 1024 * 1024) } });
    try {
      const big = blob40();
      const r = await push(wide.url, "big40", admin, "c", [{ cseq: 1, changeset: big }]);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const [entry] = await pullAll(wide.url, "big40", admin);
      assert.ok(Buffer.from(entry.changeset).equals(Buffer.from(big)));
    } finally {
      await wide.close();
    }
  });
});

describe("validation leaves the log unchanged", () => {
  const db = "validation";
  const valid = cs(1);
  const withByte = (at: number, b: number) => {
    const x = new Uint8Array(valid);
    x[at] = b;
    return x;
  };
  // Offsets in `valid`: T, nCol(2), pk flags[2], "t\0", op, indirect, record.
  const cases: Array<[string, Uint8Array]> = [
    ["empty", new Uint8Array(0)],
    ["patchset", withByte(0, 0x50)],
    ["not a changeset", new TextEncoder().encode("hello world")],
    ["zero columns", withByte(1, 0)],
    ["bad op byte", withByte(6, 0x13)],
    ["bad indirect flag", withByte(7, 2)],
    ["bad value type", withByte(8, 9)],
    ["truncated", valid.subarray(0, valid.byteLength - 1)],
    ["trailing bytes", Uint8Array.from([...valid, 0x12])],
    ["reserved table name", insertChangesetNamed("_relay_outbox")],
    ["sqlite_ table name", insertChangesetNamed("sqlite_x")],
  ];

  for (const [what, bytes] of cases) {
    it(`refuses ${what} with 400 malformed_changeset`, async () => {
      const r = await push(relay.url, db, admin, "c", [{ cseq: 1, changeset: valid }, { cseq: 2, changeset: bytes }]);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(r.body.error.code, "malformed_changeset");
      assert.match(r.body.error.message, /entries\[1\]/);
      assert.equal((await pull(relay.url, db, admin)).body.head, 0);
    });
  }

  it("refuses bodies that are not protocol messages", async () => {
    const cases: Array<[Uint8Array, string]> = [
      [new Uint8Array([0xc1]), "bad_request"],
      [encode({ client: "c" }), "bad_request"],
      [encode({ client: "c", entries: [] }), "bad_request"],
      [encode({ client: "c d", entries: [{ cseq: 1, changeset: valid }] }), "invalid_name"],
      [encode({ client: "c", entries: [{ cseq: 0, changeset: valid }] }), "bad_request"],
      [encode({ client: "c", entries: [{ cseq: 1.5, changeset: valid }] }), "bad_request"],
      [encode({ client: "c", entries: [{ cseq: 2, changeset: valid }, { cseq: 2, changeset: valid }] }), "bad_request"],
      [encode({ client: "c", entries: [{ cseq: 1, changeset: "text" }] }), "bad_request"],
      [encode({ client: "c", entries: Array.from({ length: 1001 }, (_, i) => ({ cseq: i + 1, changeset: valid })) }), "too_many_entries"],
    ];
    for (const [body, code] of cases) {
      const r = await pushRaw(relay.url, db, admin, body);
      assert.equal(r.body.error.code, code, `body ${Buffer.from(body).subarray(0, 40).toString("hex")}`);
      assert.ok(r.status >= 400 && r.status < 500);
    }
    const wrongType = await pushRaw(relay.url, db, admin, encode({ client: "c", entries: [{ cseq: 1, changeset: valid }] }), { "content-type": "application/json" });
    assert.equal(wrongType.status, 415);
    assert.equal((await pull(relay.url, db, admin)).body.head, 0);
  });
});

function insertChangesetNamed(table: string): Uint8Array {
  // Same bytes as a table "t" changeset, with the name swapped: SQLite itself
  // refuses to create tables named sqlite_*, so we build the header by hand.
  const base = insertChangeset([[1, "x"]]);
  const nameAt = 4; // T, nCol=2, pk, pk
  const tail = base.subarray(nameAt + 2); // after "t\0"
  return Uint8Array.from([...base.subarray(0, nameAt), ...new TextEncoder().encode(table), 0, ...tail]);
}

describe("auth", () => {
  const db = "authdb";
  const body = () => [{ cseq: 1, changeset: cs(1) }];

  it("no token, malformed header, bad signature, expired: 401 unauthorized", async () => {
    const forged = await signToken({ db, role: "admin", sub: "x" }, "another-secret");
    const expired = await signToken({ db, role: "write", sub: "x" }, TEST_SECRET, 60, Date.now() - 3600_000);
    const tampered = (await relay.token("read", "x", db)).replace(/\.[^.]*\./, `.${Buffer.from(JSON.stringify({ db, role: "admin", sub: "x" })).toString("base64url")}.`);
    for (const [what, token] of [["none", undefined], ["forged", forged], ["expired", expired], ["tampered", tampered], ["garbage", "abc"]] as const) {
      const r = await push(relay.url, db, token, "x", body());
      assert.equal(r.status, 401, what);
      assert.equal(r.body.error.code, "unauthorized", what);
      const p = await pull(relay.url, db, token);
      assert.equal(p.status, 401, what);
    }
    const basic = await pushRaw(relay.url, db, undefined, encode({ client: "x", entries: body() }), { authorization: "Basic abc" });
    assert.equal(basic.status, 401);
  });

  it("wrong database, read role pushing, a client id that belongs to another sub: 403 forbidden", async () => {
    const other = await relay.token("write", "x", "otherdb");
    const reader = await relay.token("read", "x", db);
    const writer = await relay.token("write", "x", "authbind");
    // The first push under client id "y" binds it to sub "y".
    assert.equal((await push(relay.url, "authbind", await relay.token("write", "y", "authbind"), "y", body())).status, 200);
    for (const [what, r] of [
      ["wrong db push", await push(relay.url, db, other, "x", body())],
      ["wrong db pull", await pull(relay.url, db, other)],
      ["read pushing", await push(relay.url, db, reader, "x", body())],
      ["another sub's client id", await push(relay.url, "authbind", writer, "y", [{ cseq: 2, changeset: cs(2) }])],
    ] as const) {
      assert.equal(r.status, 403, what);
      assert.equal(r.body.error.code, "forbidden", what);
    }
    assert.equal((await pull(relay.url, db, reader)).body.head, 0);
  });

  it("allows what the token grants: read pulls, write pushes as itself, admin as anyone, '*' any db", async () => {
    const reader = await relay.token("read", "r", db);
    const writer = await relay.token("write", "x", db);
    const star = await relay.token("write", "x", "*");
    assert.equal((await pull(relay.url, db, reader)).status, 200);
    assert.equal((await push(relay.url, db, writer, "x", body())).status, 200);
    assert.equal((await push(relay.url, db, star, "x", [{ cseq: 2, changeset: cs(2) }])).status, 200);
    assert.equal((await push(relay.url, db, admin, "someone", body())).status, 200);
  });
});

describe("persistence", () => {
  it("the log survives a restart of workerd with persisted storage", async () => {
    const dir = mkdtempSync(join(tmpdir(), "relay-persist-"));
    try {
      const big = insertChangeset([[1, new Uint8Array(3 * 1024 * 1024).fill(3)]]);
      const first = await startRelay({ persist: dir });
      await push(first.url, "kept", admin, "c", [{ cseq: 1, changeset: cs(1) }, { cseq: 2, changeset: big }]);
      await first.close();
      const second = await startRelay({ persist: dir });
      try {
        const all = await pullAll(second.url, "kept", admin);
        assert.deepEqual(all.map((e) => e.seq), [1, 2]);
        assert.ok(Buffer.from(all[1].changeset).equals(Buffer.from(big)));
        const r = await push(second.url, "kept", admin, "c", [{ cseq: 3, changeset: cs(3) }]);
        assert.equal(r.body.acks[0].seq, 3);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
