/**
 * Several V8 .cpuprofiles (a bench run's replicas and relay) side by side on
 * one clock: per window, each profile's busy milliseconds and the functions
 * that took them. V8's profile timestamps are CLOCK_MONOTONIC microseconds in
 * Node and workerd alike, so the processes line up, and who waits for whom
 * shows. `node bench/profile-timeline.ts WINDOW_MS FILE...`
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
}

const [windowArg, ...files] = process.argv.slice(2);
const windowUs = Number(windowArg) * 1000;
const IDLE = new Set(["(idle)", "(program)", "(root)"]);

/** Per window start (µs): busy µs and self µs by function. */
function windows(prof: Profile): Map<number, { busy: number; by: Map<string, number> }> {
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const out = new Map<number, { busy: number; by: Map<string, number> }>();
  const deltas = [...prof.timeDeltas].sort((a, b) => a - b);
  const cap = 4 * (deltas[deltas.length >> 1] ?? 1000);
  let t = prof.startTime;
  prof.samples.forEach((id, i) => {
    const dt = prof.timeDeltas[i] ?? 0;
    t += dt;
    const name = byId.get(id)!.callFrame.functionName || "(anonymous)";
    if (IDLE.has(name)) return;
    const w = Math.floor(t / windowUs) * windowUs;
    let e = out.get(w);
    if (!e) out.set(w, (e = { busy: 0, by: new Map() }));
    const us = Math.min(dt, cap);
    e.busy += us;
    e.by.set(name, (e.by.get(name) ?? 0) + us);
  });
  return out;
}

const all = files.map((f) => ({ name: basename(f).replace(/\.cpuprofile$/, "").slice(-12), w: windows(JSON.parse(readFileSync(f, "utf8")) as Profile) }));
const starts = [...new Set(all.flatMap((p) => [...p.w.keys()]))].sort((a, b) => a - b);
const t0 = starts[0] ?? 0;
console.log(`window ${windowArg} ms; columns: ${all.map((p) => p.name).join(" | ")}`);
for (const w of starts) {
  const cells = all.map((p) => {
    const e = p.w.get(w);
    if (!e) return "".padEnd(46);
    const top = [...e.by].sort((a, b) => b[1] - a[1]).slice(0, 2).map(([n, us]) => `${n.slice(0, 16)} ${(us / 1000).toFixed(0)}`).join(", ");
    return `${(e.busy / 1000).toFixed(0).padStart(3)} ${top}`.padEnd(46);
  });
  console.log(`${((w - t0) / 1000).toFixed(0).padStart(6)} ${cells.join("|")}`);
}
