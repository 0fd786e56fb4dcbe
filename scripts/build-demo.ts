/**
 * Builds the demo into demo/dist (served by the relay as static assets) with
 * esbuild, the way an esbuild user builds an app on "changeset-relay/browser"
 * (scripts/app-bundle.ts).
 *
 *   node scripts/build-demo.ts            build once
 *   node scripts/build-demo.ts --watch    rebuild on change
 */
import { context, type BuildOptions } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { appBuild } from "./app-bundle.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = `${root}demo/dist`;

export const demoBuild: BuildOptions = {
  ...appBuild([{ in: `${root}demo/app.ts`, out: "app" }, { in: `${root}demo/app.css`, out: "app" }], out),
  assetNames: "[name]-[hash]",
  minify: true,
  sourcemap: "linked",
  metafile: true,
};

const watch = process.argv.includes("--watch");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
copyFileSync(`${root}demo/index.html`, `${out}/index.html`);
const ctx = await context(demoBuild);
if (watch) {
  await ctx.watch();
  console.log(`watching; building into ${out}`);
} else {
  const result = await ctx.rebuild();
  await ctx.dispose();
  const sizes = Object.entries(result.metafile!.outputs)
    .filter(([file]) => !file.endsWith(".map"))
    .map(([file, o]) => `${file.slice(file.lastIndexOf("/") + 1)} ${(o.bytes / 1024).toFixed(0)} KiB`);
  console.log(`demo built into demo/dist: ${sizes.join(", ")}`);
}
