/**
 * `npm start`: the relay and the demo on http://127.0.0.1:8787 through
 * `wrangler dev` in local mode (wrangler.toml's [build] builds the demo), data
 * persisted under .wrangler/state. Creates .dev.vars with a random development
 * RELAY_SECRET the first time (never committed; production uses
 * `wrangler secret put RELAY_SECRET`).
 */
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { devVarsSecret } from "../bin/relay.js";

devVarsSecret(true); // wrangler reads it from .dev.vars

const wrangler = createRequire(import.meta.url).resolve("wrangler/bin/wrangler.js");
const args = [wrangler, "dev", "--local", "--ip", "127.0.0.1", "--port", process.env.PORT ?? "8787", "--persist-to", ".wrangler/state", ...process.argv.slice(2)];
const child = spawn(process.execPath, args, { stdio: "inherit", env: { ...process.env, WRANGLER_SEND_METRICS: "false" } });
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill(sig));
child.on("exit", (code) => process.exit(code ?? 1));
