import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { exportJWK, generateKeyPair } from "jose";
import { decode, encode } from "../protocol/codec.ts";
import { RelayError as WireRelayError } from "../protocol/errors.ts";
import { signToken, verifyToken, type Role, type SigningKey } from "../protocol/token.ts";
import { publicRole, verifyKeys } from "../worker/keys.ts";
import { openReplica, type Replica } from "../client/index.ts";
import { TODO_SCHEMA } from "./support/replicas.ts";
import { useRelay } from "./support/fixture.ts";
import { until } from "./support/wait.ts";

/** Token verification (jose): expiry and nbf with skew, iss/aud, HS256 by kid, public keys from a JWKS. */

const now = Date.now();
const claims = (sub = "alice") => ({ db: "d", role: "write" as Role, sub });

async function refused(token: Promise<string> | string, keys: Parameters<typeof verifyKeys>[0], why: RegExp, at = now): Promise<void> {
  await assert.rejects(verifyToken(await token, verifyKeys(keys), at), (e: unknown) => {
    assert.ok(e instanceof WireRelayError);
    assert.equal(e.code, "unauthorized");
    assert.match(e.message, why);
    return true;
  });
}

async function keyPair(alg: "ES256" | "EdDSA" | "RS256", kid: string) {
  const { privateKey, publicKey } = await generateKeyPair(alg, alg === "EdDSA" ? { crv: "Ed25519" } : {});
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { signing: { alg, key: privateKey, kid } satisfies SigningKey, jwk };
}

describe("token verification", () => {
  it("HS256 with a wrong key, tampered or alg none: unauthorized", async () => {
    await refused(signToken(claims(), "wrong-secret"), { RELAY_SECRET: "right-secret" }, /bad signature/);
    const none = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from(JSON.stringify(claims())).toString("base64url")}.`;
    await refused(none, { RELAY_SECRET: "s" }, /algorithm|Unsupported|alg/i);
    assert.equal((await verifyToken(await signToken(claims(), "s"), verifyKeys({ RELAY_SECRET: "s" }))).sub, "alice");
  });

  it("exp and nbf, each with a small clock skew", async () => {
    const keys = { RELAY_SECRET: "s" };
    const expired = await signToken(claims(), "s", 60, now - 70_000); // expired 10 s ago
    await refused(expired, keys, /expired/);
    const justExpired = await signToken(claims(), "s", 60, now - 62_000); // 2 s ago: within the skew
    assert.equal((await verifyToken(justExpired, verifyKeys(keys), now)).sub, "alice");
    const later = await signToken({ ...claims(), nbf: Math.floor(now / 1000) + 60 }, "s");
    await refused(later, keys, /nbf/);
    const soon = await signToken({ ...claims(), nbf: Math.floor(now / 1000) + 2 }, "s");
    assert.equal((await verifyToken(soon, verifyKeys(keys), now)).sub, "alice");
  });

  it("iss and aud, when the relay requires them", async () => {
    const keys = { RELAY_SECRET: "s", TOKEN_ISSUER: "https://auth.example.com", TOKEN_AUDIENCE: "relay" };
    await refused(signToken(claims(), "s"), keys, /iss/);
    await refused(signToken({ ...claims(), iss: "https://evil.example.com", aud: "relay" }, "s"), keys, /iss/);
    await refused(signToken({ ...claims(), iss: "https://auth.example.com", aud: "other" }, "s"), keys, /aud/);
    const ok = await signToken({ ...claims(), iss: "https://auth.example.com", aud: "relay" }, "s");
    assert.equal((await verifyToken(ok, verifyKeys(keys))).iss, "https://auth.example.com");
  });

  it("HS256 rotation by kid: old and new keys both verify, an unknown kid or the wrong key for a kid does not", async () => {
    const keys = { RELAY_SECRETS: JSON.stringify({ "2026-11": "old-secret", "2026-12": "new-secret" }) };
    const enc = (s: string) => new TextEncoder().encode(s);
    for (const [kid, secret] of [["2026-11", "old-secret"], ["2026-12", "new-secret"]]) {
      const t = await signToken(claims(kid), { alg: "HS256", key: enc(secret!), kid: kid! });
      assert.equal((await verifyToken(t, verifyKeys(keys))).sub, kid);
    }
    await refused(signToken(claims(), { alg: "HS256", key: enc("new-secret"), kid: "2027-01" }), keys, /no HS256 secret for kid "2027-01"/);
    await refused(signToken(claims(), { alg: "HS256", key: enc("old-secret"), kid: "2026-12" }), keys, /bad signature/);
    await refused(signToken(claims(), "old-secret"), keys, /without a kid need RELAY_SECRET/);
  });

  it("ES256, EdDSA and RS256 from a JWKS: the relay holds only public keys", async () => {
    const pairs = await Promise.all([keyPair("ES256", "ec-1"), keyPair("EdDSA", "ed-1"), keyPair("RS256", "rsa-1")]);
    const keys = { RELAY_JWKS: JSON.stringify({ keys: pairs.map((p) => p.jwk) }) };
    for (const p of pairs) {
      const t = await signToken(claims(p.signing.kid), p.signing, 60);
      assert.equal((await verifyToken(t, verifyKeys(keys))).sub, p.signing.kid);
    }
    // A key not in the set, under a known kid: refused.
    const stranger = await keyPair("ES256", "ec-1");
    await refused(signToken(claims(), stranger.signing), keys, /bad signature/);
    await refused(signToken(claims(), { ...stranger.signing, kid: "ec-9" }), keys, /no key in RELAY_JWKS/);
    // HS256 tokens are not accepted by a JWKS-only relay.
    await refused(signToken(claims(), "s"), keys, /need RELAY_SECRET/);
  });

  it("missing or unusable key configuration, PUBLIC_ROLE=admin: misconfigured, saying what to set", async () => {
    const mis = (fn: () => unknown, what: RegExp) =>
      assert.throws(fn, (e: unknown) => e instanceof WireRelayError && e.code === "misconfigured" && !e.retryable && what.test(e.message));
    mis(() => verifyKeys({}), /set RELAY_SECRET.*RELAY_SECRETS.*RELAY_JWKS/);
    mis(() => verifyKeys({ RELAY_JWKS: "{not json" }), /RELAY_JWKS must be a JSON Web Key Set/);
    mis(() => verifyKeys({ RELAY_SECRETS: '["a"]' }), /RELAY_SECRETS must be a JSON object/);
    const privateJwk = await exportJWK((await generateKeyPair("ES256", { extractable: true })).privateKey);
    mis(() => verifyKeys({ RELAY_JWKS: JSON.stringify({ keys: [{ ...privateJwk, kid: "x" }] }) }), /public keys only/);
    mis(() => publicRole({ PUBLIC_ROLE: "admin" }), /PUBLIC_ROLE must be "read" or "write"/);
    assert.equal(publicRole({ PUBLIC_ROLE: "read" }), "read");
    assert.equal(publicRole({}), undefined);
  });
});

const es = await keyPair("ES256", "app-1");
const relay = useRelay({ bindings: { RELAY_JWKS: JSON.stringify({ keys: [es.jwk] }), TOKEN_AUDIENCE: "relay" } });
const opened: Replica[] = [];
after(() => Promise.all(opened.map((r) => r.close())));

describe("the relay with public keys only (jose bundled for workerd)", () => {
  it("accepts ES256 tokens from the app's signer; HS256 and a missing aud are refused", async () => {
    const db = relay.db("jwks");
    const mint = (sub: string, role: Role = "write") => signToken({ db, role, sub, aud: "relay" }, es.signing, 60);
    const A = await openReplica({ url: relay.url, db, token: await mint("alice"), schema: TODO_SCHEMA });
    opened.push(A);
    await A.exec("INSERT INTO todo(id) VALUES ('1')");
    await A.sync();
    const pull = (token: string) => fetch(`${relay.url}/v1/db/${db}/pull`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal((await pull(await mint("reader", "read"))).status, 200);
    const hs = await pull(await signToken({ db, role: "read", sub: "x", aud: "relay" }, "any-secret"));
    assert.equal(hs.status, 401);
    const noAud = await pull(await signToken({ db, role: "read", sub: "x" }, es.signing));
    assert.equal(noAud.status, 401);
    assert.match((await noAud.json()).error.message, /aud/);
  });
});

describe("tokens over time", () => {
  const hs = useRelay();

  it("a socket is closed when its token expires: an unauthorized error frame, then 1008", async () => {
    const db = hs.db("expiry");
    const token = await hs.token("write", "alice", db, 1);
    const ws = new WebSocket(`${hs.url.replace("http", "ws")}/v1/db/${db}/ws?token=${token}`);
    ws.binaryType = "arraybuffer";
    const frames: any[] = [];
    ws.onmessage = (ev) => frames.push(typeof ev.data === "string" ? ev.data : decode(new Uint8Array(ev.data as ArrayBuffer)));
    const closed = new Promise<number>((r) => (ws.onclose = (ev) => r(ev.code)));
    await new Promise((res, rej) => ((ws.onopen = res), (ws.onerror = rej)));
    ws.send(encode({ t: "sub", after: 0 }));
    assert.equal(await closed, 1008);
    const last = frames.at(-1);
    assert.equal(last.t, "error");
    assert.equal(last.error.code, "unauthorized");
    assert.match(last.error.message, /expired/);
  });

  it("a live replica on 3-second tokens from a token function stays live and keeps syncing for 15 s", async () => {
    const db = hs.db("short-tokens");
    let calls = 0;
    const A = await openReplica({
      url: hs.url,
      db,
      token: async () => (calls++, hs.token("write", "alice", db, 3)),
      schema: TODO_SCHEMA,
      live: true,
      backoff: { baseMs: 5, capMs: 50 },
    });
    const B = await openReplica({ url: hs.url, db, token: await hs.token("write", "bob", db), schema: TODO_SCHEMA, live: true });
    opened.push(A, B);
    const errors: string[] = [];
    A.on("error", (e) => errors.push(`${e.code}: ${e.message}`));
    const drops: unknown[] = [];
    A.on("connection", (c) => !c.connected && drops.push(c));
    const end = Date.now() + 15_000;
    for (let i = 0; Date.now() < end; i++) {
      await A.exec("INSERT INTO todo(id) VALUES (?)", [`a${i}`]);
      await B.exec("INSERT INTO todo(id) VALUES (?)", [`b${i}`]);
      await until(async () => (await B.query("SELECT 1 FROM todo WHERE id = ?", [`a${i}`])).length === 1, `a${i} reached B`);
      await until(async () => (await A.query("SELECT 1 FROM todo WHERE id = ?", [`b${i}`])).length === 1, `b${i} reached A`);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(calls >= 5, `the token function was called ${calls} times`);
    assert.equal(A.status().live, true);
    assert.equal(A.status().pending, 0);
    assert.deepEqual(errors, []);
    assert.deepEqual(drops, [], "moving to a new token is not reported as a disconnection");
  });
});

describe("the CLI signs with a private key", () => {
  const cli = fileURLToPath(new URL("../bin/changeset-relay.js", import.meta.url));
  const mint = async (...args: string[]) =>
    (await promisify(execFile)(process.execPath, [cli, "token", "--db", "d", "--role", "write", "--sub", "alice", ...args], { env: { ...process.env, RELAY_SECRET: "cli-secret" } })).stdout.trim();

  it("--key: an Ed25519 PEM and an EC P-256 JWK, named by --kid; --kid with the secret for HS256 rotation", async () => {
    const dir = mkdtempSync(join(tmpdir(), "relay-cli-"));
    try {
      const ed = generateKeyPairSync("ed25519");
      writeFileSync(join(dir, "ed.pem"), ed.privateKey.export({ type: "pkcs8", format: "pem" }));
      const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
      writeFileSync(join(dir, "ec.jwk"), JSON.stringify(ec.privateKey.export({ format: "jwk" })));
      const jwks = { keys: [{ ...ed.publicKey.export({ format: "jwk" }), kid: "ed-1" }, { ...ec.publicKey.export({ format: "jwk" }), kid: "ec-1" }] };
      const keys = verifyKeys({ RELAY_JWKS: JSON.stringify(jwks), RELAY_SECRETS: JSON.stringify({ "hs-2": "cli-secret" }) });
      for (const [file, kid] of [["ed.pem", "ed-1"], ["ec.jwk", "ec-1"]] as const) {
        const token = await mint("--key", join(dir, file), "--kid", kid, "--ttl", "10m", "--aud", "relay");
        const c = await verifyToken(token, keys);
        assert.deepEqual([c.sub, c.aud, c.exp! - c.iat!], ["alice", "relay", 600], file);
      }
      assert.equal((await verifyToken(await mint("--kid", "hs-2"), keys)).sub, "alice");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
