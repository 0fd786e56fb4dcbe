/**
 * The relay under hostile clients (issue 17): only plain msgpack, bodies that
 * lie about their length, sockets that stop reading, clients that offer more
 * than the database's object can take. The memory side (gzip bombs, stalled
 * subscribers while 200 MB are written) is measured by `npm run test:load`.
 */
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { Packr } from "msgpackr";
import { decode, encode } from "../protocol/codec.ts";
import { isRelayError } from "../protocol/errors.ts";
import { MSGPACK } from "../protocol/version.ts";
import { insertChangeset, pull, pushRaw } from "./support/http.ts";
import { useRelay } from "./support/fixture.ts";
import { openSocket, until } from "./support/wait.ts";
import { dump, replica } from "./support/replicas.ts";
import { MAX_UNREAD_SOCKET_BYTES } from "../protocol/limits.ts";
import { MAX_FRAME_BYTES } from "../protocol/frames.ts";

const relay = useRelay();
let admin: string;
before(async () => {
  admin = await relay.token("admin", "admin");
});

const cs = (id: number) => insertChangeset([[id, `row ${id}`]]);
const head = async (db: string) => (await pull(relay.url, db, admin)).body.head as number;
/** msgpackr with its own extensions on: a Uint8Array becomes ext 0x74 (typed array) instead of bin. */
const extPackr = new Packr({ moreTypes: true, useRecords: false });

describe("only plain msgpack", () => {
  it("the codec refuses every extension type, the reserved 0xc1 and trailing bytes, wherever they sit", () => {
    const refused = (bytes: number[] | Uint8Array, why: RegExp) =>
      assert.throws(() => decode(Uint8Array.from(bytes)), (e) => isRelayError(e, "bad_request") && why.test((e as Error).message));
    refused(extPackr.pack(new Uint8Array([1, 2, 3])), /extension types.*0xc7/);
    refused([0xd4, 0x01, 0x00], /extension.*0xd4/); // fixext 1
    refused([0xd6, 0xff, 0, 0, 0, 0], /extension.*0xd6/); // timestamp 32 (type -1)
    refused([0xc8, 0x00, 0x01, 0x05, 0x00], /extension.*0xc8/); // ext 16
    refused([0xc9, 0, 0, 0, 1, 0x05, 0x00], /extension.*0xc9/); // ext 32
    refused([0x82, 0xa1, 0x61, 0x91, 0xd5, 0x01, 0, 0, 0xa1, 0x62, 0xc0], /extension.*0xd5/); // deep inside a map
    refused([0xc1], /0xc1/);
    refused([0x91, 0xc1], /0xc1/);
    refused([0x01, 0x02], /after the document/);
    refused([0x92, 0x01], /truncated/);
    refused([0xc4, 0x05, 0x01], /truncated/);
    refused([0xdf, 0xff, 0xff, 0xff, 0xff], /truncated/); // a map that claims 2^32 - 1 pairs
    // Plain types of every family still decode.
    const plain = { a: [1, -1, 300, -300, 70_000, 2 ** 40, -(2 ** 40), 1.5, true, false, null], s: "x".repeat(40), b: new Uint8Array(300), m: { k: "x".repeat(70_000) } };
    assert.deepEqual(decode(encode(plain)), { ...plain, b: Buffer.alloc(300) });
  });

  it("a push whose changeset is msgpackr's typed-array extension (0x74) is 400 over HTTP and refused over the socket; the log is unchanged", async () => {
    const db = relay.db("ext");
    const r = await pushRaw(relay.url, db, admin, extPackr.pack({ client: "c", entries: [{ cseq: 1, changeset: cs(1) }] }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, "bad_request");
    assert.match(r.body.error.message, /extension/);
    const { ws, frames } = await openSocket(relay, db, "c");
    ws.send(new Uint8Array(extPackr.pack({ t: "push", id: 1, client: "c", entries: [{ cseq: 1, changeset: cs(1) }] })));
    await until(() => frames.some((f) => f.t === "error"), "an error frame");
    assert.equal(frames.find((f) => f.t === "error").error.code, "bad_request");
    ws.close();
    assert.equal(await head(db), 0);
  });
});

describe("bodies that lie about their length", () => {
  it("a Content-Length that claims more than is sent, then the client stops sending: refused 400, log unchanged", async () => {
    const db = relay.db("short");
    const body = encode({ client: "c", entries: [{ cseq: 1, changeset: cs(1) }] });
    const { hostname, port } = new URL(relay.url);
    const text = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname, () =>
        socket.end(Buffer.concat([Buffer.from(`POST /v1/db/${db}/push HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer ${admin}\r\nContent-Type: ${MSGPACK}\r\nContent-Length: ${body.byteLength + 100}\r\n\r\n`, "latin1"), body])),
      );
      let got = "";
      socket.on("data", (b) => (got += b.toString("latin1")));
      socket.on("close", () => resolve(got));
      socket.on("error", (e) => (got ? resolve(got) : reject(e)));
      socket.setTimeout(10_000, () => reject(new Error(`no answer; got: ${got}`)));
    });
    assert.match(text, /^(HTTP\/1\.1 400 [^]*"bad_request"[^]*|)$/, text); // an answer, or a closed connection: never a stored entry
    assert.equal(await head(db), 0);
  });
});

describe("a socket that stops reading", () => {
  it(`is sent at most MAX_UNREAD_SOCKET_BYTES (${MAX_UNREAD_SOCKET_BYTES}) unread, then one head frame; entries flow again once it reports reading; a live replica beside it gets everything`, async () => {
    const db = relay.db("stall");
    const writer = await replica(relay, db, "w", "node", { live: true });
    const reader = await replica(relay, db, "r", "node", { live: true });
    await until(() => writer.status().connected && reader.status().connected, "replicas connected");
    // A raw subscriber that reads frames but never reports them (`got`): to the relay, a socket that stopped reading.
    const { ws, frames } = await openSocket(relay, db, "stalled");
    let bytes = 0;
    const count = ws.onmessage!;
    ws.onmessage = (ev) => {
      bytes += (ev.data as ArrayBuffer).byteLength;
      count.call(ws, ev);
    };
    ws.send(encode({ t: "sub", after: 0 }) as Uint8Array<ArrayBuffer>);
    await until(() => frames.length > 0, "the subscription's answer (head 0: the log is empty)");
    frames.length = 0;
    const disconnects: unknown[] = [];
    reader.on("connection", (e) => !e.connected && disconnects.push(e));
    const note = "n".repeat(200_000);
    const WRITES = 40; // 8 MB, twice the bound
    for (let i = 1; i <= WRITES; i++) await writer.exec("INSERT INTO todo(id, title, note) VALUES (?, ?, ?)", [String(i), `big ${i}`, note]);
    await until(async () => (await reader.query("SELECT count(*) AS n FROM todo"))[0]!.n === WRITES, "the reader has every row", 30_000);
    await until(() => frames.some((f) => f.t === "head"), "a head frame on the stalled socket");
    await new Promise((r) => setTimeout(r, 200)); // nothing more is coming
    const heads = frames.filter((f) => f.t === "head");
    assert.equal(heads.length, 1, "one head frame, not one per push");
    assert.equal(frames.at(-1).t, "head", "nothing after the head frame");
    assert.ok(bytes <= MAX_UNREAD_SOCKET_BYTES + MAX_FRAME_BYTES, `${bytes} bytes sent to a socket that reported reading none`);
    const seqs = frames.filter((f) => f.t === "entries").flatMap((f) => f.entries.map((e: { seq: number }) => e.seq));
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "what it got is the log's start, in order");
    // It reports reading everything: entries flow again (from the next write; it pulls the gap over HTTP).
    ws.send(encode({ t: "got", bytes }) as Uint8Array<ArrayBuffer>);
    await new Promise((r) => setTimeout(r, 50));
    await writer.exec("INSERT INTO todo(id, title) VALUES ('after', 'x')");
    await until(() => frames.at(-1).t === "entries", "entries after the report");
    assert.equal(frames.at(-1).entries.at(-1).seq, WRITES + 1);
    ws.close();
    await until(async () => (await dump(reader)) === (await dump(writer)), "reader equals writer");
    assert.deepEqual(disconnects, [], "the replica that reads was never cut off");
  });
});
