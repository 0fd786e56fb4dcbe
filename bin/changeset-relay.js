#!/usr/bin/env node
// Operations CLI. Plain JS so it runs on the user's Node without a build step
// of its own; it uses the compiled protocol module from dist/.
import { parseArgs } from "node:util";
import { existsSync, readFileSync } from "node:fs";
import { parseTtl, signToken, ROLES } from "../dist/protocol/token.js";

const usage = `usage: changeset-relay token --db NAME|* --role ${ROLES.join("|")} --sub ID [--ttl 1h]
  The secret comes from $RELAY_SECRET, else from RELAY_SECRET in ./.dev.vars.`;

function secret() {
  if (process.env.RELAY_SECRET) return process.env.RELAY_SECRET;
  if (existsSync(".dev.vars")) {
    const m = /^RELAY_SECRET=(.*)$/m.exec(readFileSync(".dev.vars", "utf8"));
    if (m) return m[1].trim().replace(/^"(.*)"$/, "$1");
  }
  throw new Error("no secret: set RELAY_SECRET or run `npm start` once to create .dev.vars");
}

async function main(argv) {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { db: { type: "string" }, role: { type: "string" }, sub: { type: "string" }, ttl: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help || positionals[0] !== "token") {
    console.log(usage);
    return values.help ? 0 : 2;
  }
  if (!values.db || !values.role || !values.sub) throw new Error(usage);
  if (!ROLES.includes(values.role)) throw new Error(`--role must be one of ${ROLES.join(", ")}`);
  const ttl = values.ttl === undefined ? undefined : parseTtl(values.ttl);
  console.log(await signToken({ db: values.db, role: values.role, sub: values.sub }, secret(), ttl));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`changeset-relay: ${e.message}`);
    process.exit(1);
  },
);
