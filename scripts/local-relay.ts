import { build } from "esbuild";
import type { MiniflareOptions } from "miniflare";
import { fileURLToPath } from "node:url";

/**
 * The relay run locally in workerd through Miniflare, bundled from worker/
 * the way wrangler bundles it. Shared by the tests (test/support/relay.ts),
 * the bench's relay process (bench/relay-host.ts) and the load script.
 */

/** The token secret of a local relay unless told otherwise. Never deploy with it. */
export const LOCAL_SECRET = "test-secret-do-not-use-in-production";
const root = fileURLToPath(new URL("..", import.meta.url));

let bundle: Promise<string> | undefined;
export function workerBundle(): Promise<string> {
  bundle ??= build({
    entryPoints: [`${root}/worker/index.ts`],
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2023",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["browser", "module", "main"],
    external: ["cloudflare:*", "node:*"],
    write: false,
    logLevel: "silent",
  }).then((r) => r.outputFiles[0]!.text);
  return bundle;
}

export interface RelayOptions {
  /** Directory to persist Durable Object storage in (a restart with the same dir keeps the log). */
  persist?: string;
  /** Bindings over the defaults (RELAY_SECRET = LOCAL_SECRET; "" unsets it). */
  bindings?: Record<string, string>;
  /** A fixed port, so a restarted relay is reachable at the same URL (default: any free port). */
  port?: number;
  /** Serve this directory as the Worker's static assets, as wrangler.toml's [assets] does (the demo: "demo/dist"). */
  assets?: string;
}

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((resolve, reject) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/** Miniflare options for the relay as wrangler.toml declares it. */
export async function relayOptions(opts: RelayOptions = {}): Promise<MiniflareOptions> {
  return {
    modules: true,
    script: await workerBundle(),
    compatibilityDate: "2026-04-01",
    compatibilityFlags: ["nodejs_compat"],
    durableObjects: { LOG: { className: "ChangesetLog", useSQLite: true } },
    bindings: { RELAY_SECRET: LOCAL_SECRET, ...opts.bindings },
    ...(opts.persist ? { durableObjectsPersist: opts.persist } : {}),
    // Routed like wrangler.toml's [assets]: /v1/* straight to the Worker, other paths are files when there is one.
    ...(opts.assets ? { assets: { directory: opts.assets, routerConfig: { has_user_worker: true, static_routing: { user_worker: ["/v1/*"] } } } } : {}),
    host: "127.0.0.1",
    port: opts.port ?? 0,
  };
}
