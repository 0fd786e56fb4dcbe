/**
 * The relay in its own process: the real Worker and Durable Object in workerd,
 * started through Miniflare with the same bundle `npm test` runs
 * (test/support/relay.ts). workerd is a child of this Node process; the bench
 * reads its memory and CPU from /proc. Reports its URL over IPC, stops on
 * "stop" or when the parent goes away. With INSPECTOR_PORT set, workerd's V8
 * inspector listens there (the bench's --cpu-prof profiles the relay with it).
 */
import { Miniflare } from "miniflare";
import { TEST_SECRET, workerBundle } from "../test/support/relay.ts";

const inspectorPort = Number(process.env.INSPECTOR_PORT) || undefined;
const mf = new Miniflare({
  modules: true,
  script: await workerBundle(),
  compatibilityDate: "2026-04-01",
  compatibilityFlags: ["nodejs_compat"],
  durableObjects: { LOG: { className: "ChangesetLog", useSQLite: true } },
  bindings: { RELAY_SECRET: TEST_SECRET },
  host: "127.0.0.1",
  port: 0,
  ...(inspectorPort ? { inspectorPort } : {}),
});
const url = (await mf.ready).toString().replace(/\/$/, "");
process.send!({ url });
const stop = async () => {
  await mf.dispose().catch(() => undefined);
  process.exit(0);
};
process.on("message", (m) => {
  if (m === "stop") void stop();
});
process.on("disconnect", () => void stop());
