import type { BuildOptions } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

/**
 * esbuild options for an app on "changeset-relay/browser", as an esbuild user
 * writes them: the database worker is a second entry point next to the app's
 * own, and the .wasm is copied by the file loader (esbuild does not follow
 * `new URL(..., import.meta.url)`). The demo, the React test and the browser
 * bench all build this way.
 */
export function appBuild(entryPoints: { in: string; out: string }[], outdir: string): BuildOptions {
  return {
    absWorkingDir: root,
    entryPoints: [...entryPoints, { in: `${root}client/browser/worker.ts`, out: "worker" }],
    outdir,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    loader: { ".wasm": "file" },
    // React's production build (the demo's list and progress bar are React).
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  };
}
