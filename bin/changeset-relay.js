#!/usr/bin/env node
// The package's CLI: run a relay locally, deploy one, mint tokens. Plain JS so
// it runs on the user's Node from an installed package without a build step of
// its own; it uses the compiled protocol module from dist/ and the app's
// wrangler (an optional peer dependency: only relay operators need it).
import { spawn } from "node:child_process";
import { createPrivateKey } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parseTtl, signToken, ROLES } from "../dist/protocol/token.js";
import { devVarsSecret, relayConfig } from "./relay.js";

const DEFAULT_TTL = "1h";
const usage = `usage: changeset-relay <command> [options] [-- wrangler options]

  dev      a relay on this machine (wrangler dev, local mode)
           --port N          $PORT, default 8787
           --persist-to DIR  $RELAY_PERSIST_TO, default .relay (data and wrangler's files)
           --secret S        $RELAY_SECRET, else RELAY_SECRET in ./.dev.vars,
                             else a development secret is created in ./.dev.vars
  deploy   the relay to your Cloudflare account (wrangler deploy)
           --name NAME       the Worker's name, default changeset-relay
           then once: npx wrangler secret put RELAY_SECRET --name NAME
  token    --db NAME|* --role ${ROLES.join("|")} --sub ID [--ttl ${DEFAULT_TTL}|30m|7d|never]
           [--iss ISSUER] [--aud AUDIENCE] [--kid KID]
           signed with $RELAY_SECRET, else RELAY_SECRET in ./.dev.vars (HS256),
           or with --key FILE: a private key, PEM (PKCS#8) or JWK, EC P-256
           (ES256), Ed25519 (EdDSA) or RSA (RS256); the relay holds the public
           key in RELAY_JWKS. --kid names the key (JWKS entry or RELAY_SECRETS)
  compact  --url URL --db NAME   build a snapshot (through a replica), upload it, trim the log
  export   --url URL --db NAME --at SEQ --out FILE
           a plain SQLite database of the state at SEQ
  status   --url URL --db NAME   head, retained log, snapshots, entry and byte counts, sockets
           (these three: $RELAY_TOKEN, else admin tokens minted as the token command does,
            --key/--kid/--iss/--aud included, a fresh one whenever one expires)`;

const options = /** @type {const} */ ({
  db: { type: "string" },
  role: { type: "string" },
  sub: { type: "string" },
  ttl: { type: "string", default: DEFAULT_TTL },
  port: { type: "string", default: process.env.PORT ?? "8787" },
  "persist-to": { type: "string", default: process.env.RELAY_PERSIST_TO ?? ".relay" },
  secret: { type: "string" },
  key: { type: "string" },
  kid: { type: "string" },
  iss: { type: "string" },
  aud: { type: "string" },
  name: { type: "string", default: "changeset-relay" },
  url: { type: "string" },
  at: { type: "string" },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
});

/**
 * The signing key: a private key file (PEM or JWK; the algorithm follows
 * from its type), else the HS256 secret.
 * @param {{ key?: string, kid?: string }} values
 * @returns {string | import("../dist/protocol/token.js").SigningKey}
 */
function signingKey(values) {
  const kid = values.kid ? { kid: values.kid } : {};
  if (!values.key) return values.kid ? { alg: "HS256", key: new TextEncoder().encode(secret()), ...kid } : secret();
  const text = readFileSync(values.key, "utf8");
  const key = text.trimStart().startsWith("{") ? createPrivateKey({ key: JSON.parse(text), format: "jwk" }) : createPrivateKey(text);
  const type = key.asymmetricKeyType;
  const alg = type === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1" ? "ES256" : type === "ed25519" ? "EdDSA" : type === "rsa" ? "RS256" : undefined;
  if (!alg) throw new Error(`--key must be an EC P-256, Ed25519 or RSA private key (got ${type})`);
  return { alg, key, ...kid };
}

function secret() {
  const found = process.env.RELAY_SECRET || devVarsSecret();
  if (!found) throw new Error("no secret: set RELAY_SECRET, or run `changeset-relay dev` here once to create .dev.vars");
  return found;
}

/** The app's wrangler, else the one beside this package. */
function wranglerBin() {
  for (const from of [join(process.cwd(), "package.json"), import.meta.url]) {
    try {
      return createRequire(from).resolve("wrangler/bin/wrangler.js");
    } catch {
      // not installed there
    }
  }
  throw new Error("wrangler is not installed: npm install --save-dev wrangler");
}

/**
 * Runs `wrangler <command>` on the relay's configuration, written into `dir`.
 * @param {"dev" | "deploy"} command
 * @param {string} dir
 * @param {string} name
 * @param {string[]} args
 * @returns {Promise<number>}
 */
function wrangler(command, dir, name, args) {
  const config = join(dir, "wrangler.json");
  writeFileSync(config, JSON.stringify(relayConfig(name), null, 2));
  const child = spawn(process.execPath, [wranglerBin(), command, "--config", config, ...args], {
    stdio: "inherit",
    env: { WRANGLER_SEND_METRICS: "false", ...process.env },
  });
  for (const sig of /** @type {const} */ (["SIGINT", "SIGTERM"])) process.on(sig, () => child.kill(sig));
  return new Promise((done) => child.on("exit", (code) => done(code ?? 1)));
}

/** @param {string[]} argv */
async function main(argv) {
  const split = argv.indexOf("--");
  const passed = split < 0 ? [] : argv.slice(split + 1);
  const { positionals, values } = parseArgs({ args: split < 0 ? argv : argv.slice(0, split), allowPositionals: true, options });
  const command = positionals[0];
  if (values.help || !command || !["dev", "deploy", "token", "compact", "export", "status"].includes(command)) {
    console.log(usage);
    return values.help ? 0 : 2;
  }
  if (command === "dev") {
    const dir = resolve(values["persist-to"]);
    mkdirSync(dir, { recursive: true });
    // --var keeps the secret out of any file but ./.dev.vars; wrangler shows it as "(hidden)".
    const args = ["--local", "--ip", "127.0.0.1", "--port", values.port, "--persist-to", dir, "--var", `RELAY_SECRET:${values.secret || process.env.RELAY_SECRET || devVarsSecret(true)}`];
    return wrangler("dev", dir, values.name, [...args, ...passed]);
  }
  if (command === "deploy") {
    const dir = mkdtempSync(join(tmpdir(), "changeset-relay-"));
    try {
      return await wrangler("deploy", dir, values.name, passed);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (command === "compact" || command === "export" || command === "status") {
    if (!values.url || !values.db) throw new Error(`${command} needs --url and --db`);
    const { lifetime } = await import("./lifetime.js");
    const claims = { db: values.db, role: /** @type {const} */ ("admin"), sub: "changeset-relay-cli", ...(values.iss ? { iss: values.iss } : {}), ...(values.aud ? { aud: values.aud } : {}) };
    // A function: a long compact or export gets a new token before this one expires.
    const token = process.env.RELAY_TOKEN || (() => signToken(claims, signingKey(values), parseTtl("10m")));
    return lifetime(command, { url: values.url, db: values.db, token, at: values.at, out: values.out });
  }
  if (!values.db || !values.role || !values.sub) throw new Error(usage);
  const role = ROLES.find((r) => r === values.role);
  if (!role) throw new Error(`--role must be one of ${ROLES.join(", ")}`);
  const ttl = values.ttl === "never" ? undefined : parseTtl(values.ttl);
  const claims = { db: values.db, role, sub: values.sub, ...(values.iss ? { iss: values.iss } : {}), ...(values.aud ? { aud: values.aud } : {}) };
  console.log(await signToken(claims, signingKey(values), ttl));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`changeset-relay: ${e.message}`);
    process.exit(1);
  },
);
