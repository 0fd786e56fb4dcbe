import { spawn } from "node:child_process";
import { dirname } from "node:path";
import { until } from "./wait.ts";

/**
 * A relay started the way a person starts one (`npx changeset-relay dev`,
 * `wrangler dev`): its own process group, since it is a tree (npm → node →
 * wrangler → workerd), stopped as a whole.
 */
export interface ServerProcess {
  url: string;
  output(): string;
  stop(): Promise<void>;
}

/** This test's Node first on PATH, as `npm test` has it, so children run on the same Node 24. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}`, WRANGLER_SEND_METRICS: "false", ...extra };
}

/** Starts `command` in `cwd` and waits until the relay on `port` answers /v1/health. */
export async function startServer(command: string, args: string[], cwd: string, port: number, env = childEnv()): Promise<ServerProcess> {
  const child = spawn(command, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const url = `http://127.0.0.1:${port}`;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // the whole group is gone already
    }
  };
  const stop = async () => {
    signal("SIGTERM");
    const killer = setTimeout(() => signal("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killer);
    signal("SIGKILL"); // any grandchild that outlived its parent
  };
  try {
    await until(async () => {
      if (gone) throw new Error(`${command} ${args.join(" ")} exited:\n${out}`);
      return fetch(`${url}/v1/health`).then((r) => r.ok, () => false);
    }, `${command} ${args.join(" ")} serving /v1/health`, 180_000);
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${out}`);
  }
  return { url, output: () => out, stop };
}
