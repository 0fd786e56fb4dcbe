/**
 * `npm start`: the relay on http://127.0.0.1:8787 through `wrangler dev` in
 * local mode, data persisted under .wrangler/state. Creates .dev.vars with a
 * random development RELAY_SECRET the first time (never committed; production
 * uses `wrangler secret put RELAY_SECRET`).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const vars = ".dev.vars";
if (!existsSync(vars) || !/^RELAY_SECRET=/m.test(readFileSync(vars, "utf8"))) {
  writeFileSync(vars, `${existsSync(vars) ? readFileSync(vars, "utf8") : ""}RELAY_SECRET=dev-${randomBytes(24).toString("hex")}\n`);
  console.log(`created ${vars} with a development RELAY_SECRET (mint tokens with: npx changeset-relay token --db todos --role write --sub me)`);
}

const wrangler = createRequire(import.meta.url).resolve("wrangler/bin/wrangler.js");
const args = [wrangler, "dev", "--local", "--ip", "127.0.0.1", "--port", process.env.PORT ?? "8787", "--persist-to", ".wrangler/state", ...process.argv.slice(2)];
const child = spawn(process.execPath, args, { stdio: "inherit", env: { ...process.env, WRANGLER_SEND_METRICS: "false" } });
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill(sig));
child.on("exit", (code) => process.exit(code ?? 1));
