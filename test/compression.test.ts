import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { gunzipSync, gzipSync } from "node:zlib";
import { acceptsGzip, COMPRESS_MIN_BYTES } from "../protocol/compression.ts";
import { gzip, gzipStream } from "../client/gzip.ts";
import { readBody } from "../worker/body.ts";
import { decode, encode } from "../protocol/codec.ts";
import { isRelayError } from "../protocol/errors.ts";
import { httpTransport } from "../client/transport/http.ts";
import { insertChangeset, pull, pullAll, pushRaw } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";

// A small body limit keeps the zip-bomb cases cheap.
const relay = useRelay({ bindings: { MAX_BODY_BYTES: String(1024 * 1024) } });
let admin: string;
before(async () => {
  admin = await relay.token("admin", "admin");
});

const streamOf = (bytes: Uint8Array, chunk = 64 * 1024) => {
  let at = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= bytes.byteLength) return c.close();
      c.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  });
  return { stream, consumed: () => Math.min(at, bytes.byteLength) };
};

const code = (e: unknown) => (isRelayError(e) ? e.code : String(e));

describe("compression module", () => {
  it("gzip output inflates back to the input, with the body reader and with zlib", async () => {
    const plain = encode({ client: "c", entries: [{ cseq: 1, changeset: insertChangeset([[1, "x".repeat(5000)]]) }] });
    const zipped = await gzip(plain);
    assert.ok(zipped.byteLength < plain.byteLength / 10);
    const same = (a: Uint8Array, b: Uint8Array) => assert.ok(Buffer.from(a).equals(Buffer.from(b)));
    same(gunzipSync(zipped), plain);
    same(await readBody(streamOf(zipped, 7).stream, "gzip", plain.byteLength), plain);
    same(await readBody(streamOf(plain).stream, null, plain.byteLength), plain);
    // The CompressionStream path, taken where node:zlib is missing (browsers).
    const streamed = await gzipStream(plain);
    same(gunzipSync(streamed), plain);
    same(await readBody(streamOf(streamed, 5).stream, "gzip", plain.byteLength), plain);
  });

  it("reads Accept-Encoding like HTTP does", () => {
    assert.equal(acceptsGzip("gzip, deflate, br"), true);
    assert.equal(acceptsGzip("br, gzip"), true);
    assert.equal(acceptsGzip("GZIP;q=0.5"), true);
    assert.equal(acceptsGzip("gzip;q=0"), false);
    assert.equal(acceptsGzip("br, *;q=0.1"), true);
    assert.equal(acceptsGzip("*;q=0, br"), false);
    assert.equal(acceptsGzip("identity"), false);
    assert.equal(acceptsGzip(""), false);
    assert.equal(acceptsGzip(null), false);
  });

  it("refuses a zip bomb once the inflated size passes the limit, inflating no further and reading at most the limit more", async () => {
    const bomb = gzipSync(new Uint8Array(128 * 1024 * 1024), { level: 1 }); // 128 MiB of zeros in ~580 KB
    // The bomb, then bytes without end that are not gzip: inflating them would be `bad_request`, reading them all would never end.
    let at = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(at < bomb.byteLength ? bomb.slice(at, at + 4096) : new Uint8Array(4096).fill(0x55));
        at += 4096;
      },
    });
    const limit = 1024 * 1024;
    await assert.rejects(readBody(endless, "gzip", limit), (e) => code(e) === "payload_too_large");
    // What it read past the refusal is drained (so the client can read the 413), never inflated.
    assert.ok(at <= 2 * limit + 64 * 1024, `read ${at} bytes`);
  });

  it("applies the limit to plain bodies and to compressed bytes too", async () => {
    await assert.rejects(readBody(streamOf(new Uint8Array(2000)).stream, null, 1999), (e) => code(e) === "payload_too_large");
    const noise = gzipSync(crypto.getRandomValues(new Uint8Array(60_000)));
    await assert.rejects(readBody(streamOf(noise).stream, "gzip", 50_000), (e) => code(e) === "payload_too_large");
  });

  it("types its refusals: unknown encodings 415, broken gzip 400", async () => {
    await assert.rejects(readBody(streamOf(new Uint8Array(10)).stream, "br", 100), (e) => code(e) === "unsupported_media_type");
    const broken = gzipSync(new Uint8Array(5000).fill(7));
    broken[broken.byteLength - 6]! ^= 0xff; // CRC
    await assert.rejects(readBody(streamOf(broken).stream, "gzip", 100_000), (e) => code(e) === "bad_request");
    await assert.rejects(readBody(streamOf(new Uint8Array([1, 2, 3, 4])).stream, "gzip", 100), (e) => code(e) === "bad_request");
  });

  it("inflates concatenated gzip members; truncated gzip and bytes after its end are bad_request", async () => {
    const a = new Uint8Array(70_000).fill(1), b = new Uint8Array(90_000).fill(2);
    const two = Buffer.concat([gzipSync(a), gzipSync(b)]);
    assert.ok(Buffer.from(await readBody(streamOf(two, 1000).stream, "gzip", 160_000)).equals(Buffer.concat([a, b])));
    await assert.rejects(readBody(streamOf(two, 1000).stream, "gzip", 159_999), (e) => code(e) === "payload_too_large");
    const one = gzipSync(a);
    await assert.rejects(readBody(streamOf(one.subarray(0, one.byteLength - 3)).stream, "gzip", 100_000), (e) => code(e) === "bad_request");
    await assert.rejects(readBody(streamOf(Buffer.concat([one, Buffer.from([1, 2, 3, 4])])).stream, "gzip", 100_000), (e) => code(e) === "bad_request");
  });
});

describe("relay", () => {
  const pushBody = (client: string, cseq: number, rows: number) =>
    encode({ client, entries: [{ cseq, changeset: insertChangeset(Array.from({ length: rows }, (_, i) => [i + 1, `row ${i + 1} of a compressible page`])) }] });

  it("accepts a gzip push and stores exactly the inflated entry", async () => {
    const db = "gz-push";
    const plain = pushBody("c", 1, 500);
    const r = await pushRaw(relay.url, db, admin, await gzip(plain), { "content-encoding": "gzip" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const [entry] = await pullAll(relay.url, db, admin);
    assert.ok(Buffer.from(entry.changeset).equals((decode(plain) as any).entries[0].changeset));
  });

  it("refuses zip bombs (413), broken gzip (400) and other encodings (415), log unchanged", async () => {
    const db = "gz-bad";
    const bomb = gzipSync(new Uint8Array(8 * 1024 * 1024)); // under the 1 MiB limit compressed, 8 MiB inflated
    assert.ok(bomb.byteLength < 1024 * 1024);
    const r1 = await pushRaw(relay.url, db, admin, bomb, { "content-encoding": "gzip" });
    assert.equal(r1.status, 413);
    assert.equal(r1.body.error.code, "payload_too_large");
    const r2 = await pushRaw(relay.url, db, admin, new Uint8Array([0x1f, 0x8b, 8, 0, 1, 2, 3]), { "content-encoding": "gzip" });
    assert.equal(r2.status, 400);
    assert.equal(r2.body.error.code, "bad_request");
    const r3 = await pushRaw(relay.url, db, admin, pushBody("c", 1, 3), { "content-encoding": "br" });
    assert.equal(r3.status, 415);
    assert.equal(r3.body.error.code, "unsupported_media_type");
    assert.equal((await pull(relay.url, db, admin)).body.head, 0);
  });

  /** A pull with node:http, which (unlike fetch) shows the bytes as they came. */
  const rawPull = (db: string, acceptEncoding: string) =>
    new Promise<{ encoding: string | undefined; bytes: Buffer }>((resolve, reject) => {
      const req = httpRequest(`${relay.url}/v1/db/${db}/pull?after=0`, { headers: { authorization: `Bearer ${admin}`, "accept-encoding": acceptEncoding } }, (res) => {
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () => resolve({ encoding: res.headers["content-encoding"], bytes: Buffer.concat(parts) }));
      });
      req.on("error", reject);
      req.end();
    });

  it("gzips pull pages of 1 KiB or more, and sends smaller ones plain", async () => {
    // workerd (like Cloudflare's edge) rewrites Accept-Encoding to "br, gzip"
    // before the Worker sees it, so the identity case is only unit-tested above.
    const db = "gz-pull";
    const plain = pushBody("c", 1, 500);
    assert.equal((await pushRaw(relay.url, db, admin, plain)).status, 200);
    const zipped = await rawPull(db, "gzip, deflate");
    assert.equal(zipped.encoding, "gzip");
    assert.equal(zipped.bytes[8], 0, "gzip XFL: a page under 1 MiB at zlib's default level");
    const page = gunzipSync(zipped.bytes);
    assert.ok(zipped.bytes.byteLength < page.byteLength / 4, `${zipped.bytes.byteLength} vs ${page.byteLength}`);
    const [entry] = (decode(page) as any).entries;
    assert.ok(Buffer.from(entry.changeset).equals((decode(plain) as any).entries[0].changeset));

    const small = "gz-small";
    assert.equal((await pushRaw(relay.url, small, admin, pushBody("c", 1, 1))).status, 200);
    const tiny = await rawPull(small, "gzip");
    assert.equal(tiny.encoding, undefined);
    assert.ok(tiny.bytes.byteLength < COMPRESS_MIN_BYTES);
    assert.equal((decode(tiny.bytes) as any).entries.length, 1);
  });

  it("gzips a pull page over 1 MiB at zlib's fastest level, byte for byte what was pushed", async () => {
    const db = "gz-big-page";
    // Two entries of ~700 KB each (the body limit here is 1 MiB), pulled as one page.
    const text = (i: number) => `row ${i} ${"abcdefghijklmnopqrstuvwxyz".repeat(4)}`;
    const sent: Uint8Array[] = [];
    for (const cseq of [1, 2]) {
      const changeset = insertChangeset(Array.from({ length: 6000 }, (_, i) => [cseq * 10_000 + i, text(i)]));
      sent.push(changeset);
      assert.equal((await pushRaw(relay.url, db, admin, await gzip(encode({ client: "c", entries: [{ cseq, changeset }] })), { "content-encoding": "gzip" })).status, 200);
    }
    const zipped = await rawPull(db, "gzip");
    assert.equal(zipped.encoding, "gzip");
    // RFC 1952 XFL: 4 = compressed with the fastest algorithm (level 1); the runtime's own encoding writes 0.
    assert.equal(zipped.bytes[8], 4, "gzip XFL");
    const page = decode(gunzipSync(zipped.bytes)) as { entries: { changeset: Uint8Array }[] };
    assert.ok(gunzipSync(zipped.bytes).byteLength > 1024 * 1024);
    assert.deepEqual(page.entries.map((e) => Buffer.from(e.changeset).equals(sent[page.entries.indexOf(e)]!)), [true, true]);
  });

  it("the client gzips large pushes, sends small ones plain, and reads gzip pulls", async () => {
    const db = "gz-client";
    const sent: { encoding: string | null; bytes: number }[] = [];
    const spy: typeof fetch = async (input, init) => {
      if (init?.method === "POST") sent.push({ encoding: new Headers(init.headers).get("content-encoding"), bytes: (init.body as Uint8Array).byteLength });
      return fetch(input, init);
    };
    const t = httpTransport({ url: relay.url, db, token: admin, fetch: spy });
    const big = insertChangeset(Array.from({ length: 300 }, (_, i) => [i + 1, `row ${i + 1}`]));
    const small = insertChangeset([[1000, "x"]]);
    await t.push("c", [{ cseq: 1, changeset: big }]);
    await t.push("c", [{ cseq: 2, changeset: small }]);
    assert.equal(sent[0]!.encoding, "gzip");
    assert.ok(sent[0]!.bytes < big.byteLength / 2);
    assert.equal(sent[1]!.encoding, null);
    const page = await t.pull(0);
    assert.deepEqual(page.entries.map((e) => e.changeset.byteLength), [big.byteLength, small.byteLength]);
  });
});
