import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { encode, decode } from "../protocol/codec.ts";
import type { Replica } from "../client/index.ts";
import type { WebSocketLike } from "../client/transport/socket.ts";
import { dump, replica } from "./support/replicas.ts";
import { useRelay } from "./support/fixture.ts";
import { insertChangeset, pullAll } from "./support/http.ts";

const relay = useRelay({ persist: true, samePort: true });

/** Resolves when `pred` holds, re-checking on every event of `r`; fails after `ms`. */
function until(r: Replica, pred: () => Promise<boolean> | boolean, ms = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const offs: Array<() => void> = [];
    const done = (e?: Error) => {
      clearTimeout(t);
      offs.forEach((f) => f());
      e ? reject(e) : resolve();
    };
    const check = async () => {
      try {
        if (await pred()) done();
      } catch (e) {
        done(e as Error);
      }
    };
    const t = setTimeout(() => done(new Error("condition not met in time")), ms);
    for (const ev of ["change", "sync", "connection"] as const) offs.push(r.on(ev, () => void check()));
    void check();
  });
}

const connected = (r: Replica) => until(r, () => r.status().connected);
const titles = async (r: Replica) => (await r.query<{ title: string }>("SELECT title FROM todo ORDER BY id")).map((x) => x.title);

describe("live sync", () => {
  it("a write on A reaches B without sync()", async () => {
    const db = relay.db("live");
    const A = await replica(relay, db, "a", "node", { live: true });
    const B = await replica(relay, db, "b", "wasm", { live: true });
    await Promise.all([connected(A), connected(B)]);
    const remote: number[] = [];
    B.on("change", (e) => e.source === "remote" && remote.push(e.cursor));
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'live')");
    await until(B, async () => (await titles(B)).includes("live"));
    assert.deepEqual(remote, [2], "seq 1 is the schema, which changed nothing on B");
    await until(A, () => A.status().pending === 0);
    assert.equal(await dump(A), await dump(B));
    await Promise.all([A.close(), B.close()]);
  });

  it("200 quick writes arrive in log order on 3 subscribers", async () => {
    const db = relay.db("burst");
    const W = await replica(relay, db, "w", "node", { live: true });
    const subs = await Promise.all(["s1", "s2", "s3"].map((id, i) => replica(relay, db, id, i === 1 ? "wasm" : "node", { live: true })));
    await Promise.all([W, ...subs].map(connected));
    const orders = subs.map(() => [] as number[]);
    subs.forEach((s, i) => s.on("change", (e) => e.source === "remote" && orders[i]!.push(e.cursor)));
    for (let k = 0; k < 200; k++) await W.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`k${String(k).padStart(3, "0")}`, `t${k}`]);
    for (const s of subs) await until(s, () => s.status().cursor === 201); // seq 1 is the schema
    for (const o of orders) {
      assert.ok(o.length > 0);
      assert.deepEqual(o, [...o].sort((a, b) => a - b), "cursor only moves forward");
      assert.equal(o.at(-1), 201);
    }
    const want = await dump(W);
    for (const s of subs) assert.equal(await dump(s), want);
    const log = await pullAll(relay.url, db, await relay.token("read", "x", db));
    assert.deepEqual(log.map((e: any) => e.cseq), Array.from({ length: 201 }, (_, i) => i), "the schema entry (cseq 0), then every write once");
    await Promise.all([W, ...subs].map((r) => r.close()));
  });

  it("a socket closed by the client mid-stream resumes with nothing lost or applied twice", async () => {
    const db = relay.db("clientdrop");
    const sockets: WebSocketLike[] = [];
    const createWebSocket = (url: string) => {
      const ws = new WebSocket(url) as unknown as WebSocketLike;
      sockets.push(ws);
      return ws;
    };
    const A = await replica(relay, db, "a", "node", { live: true });
    const B = await replica(relay, db, "b", "node", { live: true, createWebSocket });
    await Promise.all([connected(A), connected(B)]);
    const connections: boolean[] = [];
    B.on("connection", (e) => connections.push(e.connected));
    for (let k = 0; k < 30; k++) {
      await A.exec("INSERT INTO todo(id, title) VALUES (?, ?)", [`k${k}`, `t${k}`]);
      if (k === 10) sockets.at(-1)!.close(4000, "test drop");
      if (k === 20) await B.exec("INSERT INTO todo(id, title) VALUES ('b', 'from B while reconnecting')");
    }
    await until(B, () => B.status().cursor === 32 && B.status().pending === 0 && B.status().connected);
    await until(A, () => A.status().cursor === 32);
    assert.equal(await dump(A), await dump(B));
    assert.ok(sockets.length >= 2, "B reconnected");
    assert.deepEqual(connections.slice(0, 2), [false, true]);
    const log = await pullAll(relay.url, db, await relay.token("read", "x", db));
    assert.equal(log.length, 32, "the schema entry and 31 writes");
    await Promise.all([A.close(), B.close()]);
  });

  it("a relay restart closes sockets from the server side; replicas reconnect and converge", async () => {
    const db = relay.db("serverdrop");
    const A = await replica(relay, db, "a", "node", { live: true, backoff: { baseMs: 20, capMs: 200 } });
    const B = await replica(relay, db, "b", "wasm", { live: true, backoff: { baseMs: 20, capMs: 200 } });
    await Promise.all([connected(A), connected(B)]);
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'before')");
    await until(B, async () => (await titles(B)).length === 1);
    const down = until(B, () => !B.status().connected);
    await relay.stop();
    await down;
    await A.exec("INSERT INTO todo(id, title) VALUES ('2', 'while down')");
    await relay.start();
    await until(B, async () => (await titles(B)).includes("while down"), 30_000);
    await B.exec("INSERT INTO todo(id, title) VALUES ('3', 'after')");
    await until(A, async () => (await titles(A)).includes("after"));
    assert.equal(await dump(A), await dump(B));
    await Promise.all([A.close(), B.close()]);
  });

  it("delivery still works after the Durable Object was evicted between writes", { timeout: 60_000 }, async () => {
    const db = relay.db("hibernate");
    const A = await replica(relay, db, "a", "node", { live: true, heartbeatMs: 1000 });
    const B = await replica(relay, db, "b", "node", { live: true, heartbeatMs: 1000 });
    await Promise.all([connected(A), connected(B)]);
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'first')");
    await until(B, async () => (await titles(B)).length === 1);
    const instance = async () => (await fetch(`${relay.url}/v1/db/${db}/pull?after=999`, { headers: { authorization: `Bearer ${await relay.token("read", "x", db)}` } })).headers.get("x-relay-instance");
    const before = await instance();
    // workerd evicts an idle object after ~10 s; heartbeats are answered by
    // the runtime (auto-response) and do not keep it awake.
    await new Promise((r) => setTimeout(r, 13_000));
    assert.ok(A.status().connected && B.status().connected, "sockets stayed open across hibernation");
    await A.exec("INSERT INTO todo(id, title) VALUES ('2', 'after hibernation')");
    await until(B, async () => (await titles(B)).includes("after hibernation"));
    assert.notEqual(await instance(), before, "the object was evicted and rebuilt");
    await Promise.all([A.close(), B.close()]);
  });

  it("setLive(false) stops syncing; writes queue and go out when switched back on", async () => {
    const db = relay.db("offline");
    const A = await replica(relay, db, "a", "node", { live: true });
    const B = await replica(relay, db, "b", "node", { live: true });
    await Promise.all([connected(A), connected(B)]);
    await A.sync(); // the HTTP sync that pushes A's schema version has run
    A.setLive(false);
    assert.equal(A.status().connected, false);
    await A.exec("INSERT INTO todo(id, title) VALUES ('1', 'offline write')");
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await titles(B), []);
    assert.equal(A.status().pending, 1);
    A.setLive(true);
    await until(B, async () => (await titles(B)).includes("offline write"));
    await Promise.all([A.close(), B.close()]);
  });
});

describe("socket protocol", () => {
  async function open(db: string, token: string): Promise<WebSocket> {
    const ws = new WebSocket(`${relay.url.replace("http", "ws")}/v1/db/${db}/ws?token=${token}`);
    ws.binaryType = "arraybuffer";
    await new Promise((res, rej) => ((ws.onopen = res), (ws.onerror = rej)));
    return ws;
  }
  const next = (ws: WebSocket) => new Promise<any>((res) => (ws.onmessage = (ev) => res(typeof ev.data === "string" ? ev.data : decode(new Uint8Array(ev.data)))));

  it("push over the socket: validated, acked, idempotent; a read token is refused", async () => {
    const db = relay.db("wsproto");
    const ws = await open(db, await relay.token("write", "c", db));
    const changeset = insertChangeset([[1, "x"]]);
    ws.send(encode({ t: "push", id: 1, client: "c", entries: [{ cseq: 1, changeset }] }));
    assert.deepEqual(await next(ws), { t: "ack", id: 1, acks: [{ cseq: 1, seq: 1 }], head: 1 });
    ws.send(encode({ t: "push", id: 2, client: "c", entries: [{ cseq: 1, changeset }] }));
    assert.deepEqual(await next(ws), { t: "ack", id: 2, acks: [{ cseq: 1, seq: 1 }], head: 1 });
    ws.send(encode({ t: "push", id: 3, client: "c", entries: [{ cseq: 2, changeset: new Uint8Array([1, 2, 3]) }] }));
    const bad = await next(ws);
    assert.equal(bad.t, "error");
    assert.equal(bad.id, 3);
    assert.equal(bad.error.code, "malformed_changeset");
    // Client id "c" is bound to sub "c" by its first push: another sub may not write under it.
    const other = await open(db, await relay.token("write", "d", db));
    other.send(encode({ t: "push", id: 4, client: "c", entries: [{ cseq: 9, changeset }] }));
    assert.equal((await next(other)).error.code, "forbidden");
    other.close();
    ws.send("ping");
    assert.equal(await next(ws), "pong");
    ws.close();

    const reader = await open(db, await relay.token("read", "r", db));
    reader.send(encode({ t: "push", id: 1, client: "r", entries: [{ cseq: 1, changeset }] }));
    assert.equal((await next(reader)).error.code, "forbidden");
    reader.send(encode({ t: "sub", after: 0 }));
    const backlog = await next(reader);
    assert.equal(backlog.t, "entries");
    assert.deepEqual(backlog.entries.map((e: any) => e.seq), [1]);
    reader.close();
    assert.equal((await pullAll(relay.url, db, await relay.token("read", "x", db))).length, 1);
  });

  it("an unreadable frame gets an error frame and close code 1007", async () => {
    const db = relay.db("wsbad");
    const ws = await open(db, await relay.token("write", "c", db));
    const closed = new Promise<number>((res) => ws.addEventListener("close", (e) => res(e.code)));
    ws.send(new Uint8Array([0xc1]));
    assert.equal((await next(ws)).error.code, "bad_request");
    assert.equal(await closed, 1007);
  });

  it("a frame over 1 MiB is refused with payload_too_large and close code 1009, log unchanged", async () => {
    const db = relay.db("wsbig");
    const ws = await open(db, await relay.token("write", "c", db));
    const closed = new Promise<number>((res) => ws.addEventListener("close", (e) => res(e.code)));
    ws.send(encode({ t: "push", id: 1, client: "c", entries: [{ cseq: 1, changeset: insertChangeset([[1, new Uint8Array(1024 * 1024)]]) }] }));
    assert.equal((await next(ws)).error.code, "payload_too_large");
    assert.equal(await closed, 1009);
    assert.equal((await pullAll(relay.url, db, await relay.token("read", "x", db))).length, 0);
  });

  it("the upgrade is authenticated like HTTP", async () => {
    const db = relay.db("wsauth");
    // fetch() refuses Upgrade headers, so the handshake is sent with node:http.
    const status = (path: string, upgrade = true) =>
      new Promise<number>((resolve, reject) => {
        const headers: Record<string, string> = upgrade
          ? { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" }
          : {};
        const req = httpRequest(`${relay.url}${path}`, { headers }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on("upgrade", (res, socket) => {
          socket.destroy();
          resolve(res.statusCode ?? 0);
        });
        req.on("error", reject);
        req.end();
      });
    assert.equal(await status(`/v1/db/${db}/ws`), 401);
    assert.equal(await status(`/v1/db/${db}/ws?token=${await relay.token("write", "c", "elsewhere")}`), 403);
    assert.equal(await status(`/v1/db/${db}/ws?token=${await relay.token("read", "c", db)}`), 101);
    assert.equal(await status(`/v1/db/${db}/ws`, false), 426);
  });
});
