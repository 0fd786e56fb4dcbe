/**
 * Security checks against the real relay in workerd: database isolation,
 * roles, and request bodies refused before they are buffered whole.
 * (test/relay.test.ts covers token validity: forged, expired, tampered.)
 */
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { encode } from "../protocol/codec.ts";
import { MSGPACK } from "../protocol/version.ts";
import { openReplica, RelayError } from "../client/index.ts";
import { insertChangeset, pull, pullAll, push, pushRaw } from "./support/http.ts";
import { TODO_SCHEMA } from "./support/replicas.ts";
import { useRelay } from "./support/fixture.ts";
import { startRelay } from "./support/relay.ts";

const LIMIT = 1000;
const relay = useRelay({ bindings: { MAX_BODY_BYTES: String(LIMIT) } });
let admin: string;
before(async () => {
  admin = await relay.token("admin", "admin");
});

const cs = (id: number) => insertChangeset([[id, `row ${id}`]]);
const head = async (db: string) => (await pull(relay.url, db, admin)).body.head as number;

describe("a token for database A cannot reach database B", () => {
  const A = "tenant-a", B = "tenant-b";
  before(async () => {
    assert.equal((await push(relay.url, B, admin, "owner", [{ cseq: 1, changeset: cs(1) }])).status, 200);
  });

  for (const role of ["read", "write", "admin"] as const) {
    it(`${role} token for A: pull and push on B are 403 forbidden, and B's entries never leave`, async () => {
      const token = await relay.token(role, "x", A);
      const p = await pull(relay.url, B, token);
      assert.equal(p.status, 403);
      assert.equal(p.body.error.code, "forbidden");
      assert.equal(p.body.entries, undefined);
      const w = await push(relay.url, B, token, "x", [{ cseq: 1, changeset: cs(2) }]);
      assert.equal(w.status, 403);
      assert.equal(w.body.error.code, "forbidden");
      assert.equal(await head(B), 1, "B unchanged");
      assert.equal(await head(A), 0, "nothing landed in A either");
    });
  }

  it("names are exact: case, percent-encoding and a token in the query do not cross over", async () => {
    const token = await relay.token("admin", "x", A);
    for (const path of ["TENANT-B", "Tenant-b", "tenant-b%00", "%74enant-b", "tenant-a%2F..%2Ftenant-b", "tenant-a/../tenant-b"]) {
      const res = await fetch(`${relay.url}/v1/db/${path}/pull?after=0`, { headers: { authorization: `Bearer ${token}` } });
      const body = new Uint8Array(await res.arrayBuffer());
      assert.notEqual(res.status, 200, `${path}: ${res.status}`);
      assert.ok(!Buffer.from(body).includes("row 1"), `${path} leaked B's data`);
    }
    // HTTP routes take the token from the header only (a URL can land in logs).
    const viaQuery = await fetch(`${relay.url}/v1/db/${B}/pull?after=0&token=${token}`);
    assert.equal(viaQuery.status, 401);
    await viaQuery.arrayBuffer();
  });

  it("the client library: a replica of B with A's token gets forbidden and applies nothing", async () => {
    const r = await openReplica({ url: relay.url, db: B, token: await relay.token("write", "x", A), schema: TODO_SCHEMA, driver: "wasm" });
    await assert.rejects(r.sync(), (e: unknown) => e instanceof RelayError && e.code === "forbidden");
    assert.equal(r.status().cursor, 0);
    await r.close();
  });
});

describe("a read token cannot write", () => {
  it("HTTP push with a read token is 403 forbidden, for its own sub and for others, and the log is unchanged", async () => {
    const db = "readonly";
    const reader = await relay.token("read", "r", db);
    for (const client of ["r", "someone-else"]) {
      const res = await push(relay.url, db, reader, client, [{ cseq: 1, changeset: cs(1) }]);
      assert.equal(res.status, 403, client);
      assert.equal(res.body.error.code, "forbidden");
    }
    const star = await relay.token("read", "r", "*");
    assert.equal((await push(relay.url, db, star, "r", [{ cseq: 1, changeset: cs(1) }])).status, 403);
    assert.equal(await head(db), 0);
  });

  // The socket half (a read token's push frame, an oversized frame, the
  // upgrade's auth, a token for another database) is in test/live.test.ts,
  // "socket protocol".
});

describe(`request bodies above MAX_BODY_BYTES (${LIMIT} here) are refused before being buffered whole`, () => {
  it("a declared Content-Length above the limit: 413 at once", async () => {
    const body = encode({ client: "c", entries: [{ cseq: 1, changeset: insertChangeset([[1, "x".repeat(2 * LIMIT)]]) }] });
    const r = await pushRaw(relay.url, "big", admin, body);
    assert.equal(r.status, 413);
    assert.equal(r.body.error.code, "payload_too_large");
    assert.equal(await head("big"), 0);
  });

  it("a streamed body without Content-Length: 413 once past the limit, while the body has not even ended", async () => {
    // Just past the limit, then the stream stays open: a relay that buffers
    // the whole body first would wait for its end forever (and the fetch
    // times out). One that counts as it reads answers at once. Sending no
    // more than that keeps the relay's close from resetting the connection
    // under a write, which would hide the answer.
    let stalled!: () => void;
    const stall = new Promise<void>((r) => (stalled = r));
    let produced = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (produced > LIMIT) return stall;
        produced += 600;
        controller.enqueue(new Uint8Array(600).fill(0x61));
      },
      cancel: () => stalled(),
    });
    const res = await fetch(`${relay.url}/v1/db/stream/push`, {
      method: "POST",
      body: stream,
      headers: { authorization: `Bearer ${admin}`, "content-type": MSGPACK },
      duplex: "half",
      signal: AbortSignal.timeout(20_000),
    } as RequestInit);
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "payload_too_large");
    stalled();
    assert.equal(await head("stream"), 0);
  });

  /** One raw HTTP/1.1 exchange: fetch refuses to send a Content-Length that disagrees with the body. */
  function raw(request: Buffer, until: (text: string) => boolean, halfClose: boolean): Promise<string> {
    const { hostname, port } = new URL(relay.url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => (halfClose ? socket.end(request) : socket.write(request)));
      let text = "";
      const done = () => {
        socket.destroy();
        resolve(text);
      };
      socket.on("data", (b) => {
        text += b.toString("latin1");
        if (until(text)) done();
      });
      socket.on("end", done);
      socket.on("close", done);
      socket.on("error", (e) => (text ? done() : reject(e)));
      socket.setTimeout(10_000, () => reject(new Error(`no answer; got: ${text}`)));
    });
  }

  const statuses = (text: string) => [...text.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => Number(m[1]));
  const headers = (length: number) =>
    `POST /v1/db/raw/push HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer ${admin}\r\nContent-Type: ${MSGPACK}\r\nContent-Length: ${length}\r\n\r\n`;

  it("a Content-Length that claims more than the limit is answered 413 before a byte of the body is sent", async () => {
    const text = await raw(Buffer.from(headers(64 * 1024 * 1024), "latin1"), (t) => /\r\n\r\n[^]*\}\}/.test(t), false);
    assert.deepEqual(statuses(text), [413], text);
    assert.match(text, /payload_too_large/);
    assert.equal(await head("raw"), 0);
  });

  it("a Content-Length that claims less than is sent: only the declared bytes are read as that request's body", async () => {
    const valid = encode({ client: "c", entries: [{ cseq: 1, changeset: cs(1) }] });
    const smuggled = Buffer.concat([Buffer.from(headers(valid.byteLength), "latin1"), valid]);
    // Declares 10 bytes; what follows is a whole, valid push request plus padding past the limit.
    const req = Buffer.concat([Buffer.from(headers(10), "latin1"), Buffer.from(valid.subarray(0, 10)), smuggled, Buffer.alloc(4 * LIMIT, 0x61)]);
    const text = await raw(req, () => false, true);
    const got = statuses(text);
    assert.ok(got.length >= 1, text);
    assert.equal(got[0], 400, "the 10 declared bytes are not a push body");
    assert.match(text, /^HTTP\/1\.1 400 [^{]*\{"error":\{"code":"bad_request"/);
    // The pipelined request after it is a separate request, with its own (correct) Content-Length:
    // it may be served, but as itself, never merged into the first body.
    const log = await pullAll(relay.url, "raw", admin);
    assert.ok(log.length <= 1);
    if (log.length === 1) assert.deepEqual(new Uint8Array(log[0].changeset), cs(1));
  });
});

describe("a relay deployed without RELAY_SECRET", () => {
  it("answers tokened requests 500 misconfigured, saying what to set; the client gives up at once instead of retrying", async () => {
    const bare = await startRelay({ bindings: { RELAY_SECRET: "" } });
    try {
      const token = await relay.token("write", "w", "db");
      const res = await push(bare.url, "db", token, "w", [{ cseq: 1, changeset: cs(1) }]);
      assert.equal(res.status, 500);
      assert.equal(res.body.error.code, "misconfigured");
      assert.match(res.body.error.message, /RELAY_SECRET/);
      const r = await openReplica({ url: bare.url, db: "db", token, clientId: "w", driver: "node", schema: TODO_SCHEMA, backoff: { baseMs: 1, capMs: 1, maxAttempts: 3 } });
      try {
        await r.exec("INSERT INTO todo(id, title) VALUES ('1', 'x')");
        await assert.rejects(r.sync(), (e) => e instanceof RelayError && e.code === "misconfigured" && !e.retryable);
      } finally {
        await r.close();
      }
    } finally {
      await bare.close();
    }
  });
});
