/**
 * The relay in its own process: the real Worker and Durable Object in workerd,
 * started through Miniflare with the same bundle `npm test` runs
 * (scripts/local-relay.ts). workerd is a child of this Node process; the bench
 * reads its memory and CPU from /proc. Reports its URL over IPC, stops on
 * "stop" or when the parent goes away. With INSPECTOR_PORT set, workerd's V8
 * inspector listens there (the bench's --cpu-prof profiles the relay with it).
 */
import { Miniflare } from "miniflare";
import { relayOptions } from "../scripts/local-relay.ts";

const inspectorPort = Number(process.env.INSPECTOR_PORT) || undefined;
// RELAY_ASSETS: a directory served as static assets (the Chromium bench's page).
const assets = process.env.RELAY_ASSETS;
const mf = new Miniflare({ ...(await relayOptions(assets ? { assets } : {})), ...(inspectorPort ? { inspectorPort } : {}) });
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
