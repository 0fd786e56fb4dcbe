/**
 * Summarise a V8 .cpuprofile (from `npm run bench -- --cpu-prof`): self time
 * per function, and inclusive time of the functions that matter, so a missed
 * target can be traced to code. `node bench/profile-summary.ts FILE [TOP]`
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
  hitCount?: number;
}
const [file, topArg] = process.argv.slice(2);
const prof = JSON.parse(readFileSync(file!, "utf8")) as { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number };
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
// A sample's weight is the time since the previous one, capped: workerd's
// sampler pauses while no JavaScript runs, and without the cap the whole pause
// lands on whatever ran next.
const deltas = [...prof.timeDeltas].sort((a, b) => a - b);
const cap = 4 * (deltas[deltas.length >> 1] ?? 1000);
const self = new Map<number, number>();
prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + Math.min(prof.timeDeltas[i] ?? 0, cap)));
const total = [...self.values()].reduce((a, b) => a + b, 0);
const label = (n: Node) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^.*\/work\/main\//, "")}:${n.callFrame.lineNumber + 1}`;
const selfBy = new Map<string, number>();
const inclBy = new Map<string, number>();
for (const [id, t] of self) {
  const n = byId.get(id)!;
  selfBy.set(label(n), (selfBy.get(label(n)) ?? 0) + t);
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(byId.get(cur)!);
    if (seen.has(l)) continue;
    seen.add(l);
    inclBy.set(l, (inclBy.get(l) ?? 0) + t);
  }
}
const top = Number(topArg ?? 25);
const ms = (us: number) => `${(us / 1000).toFixed(1).padStart(8)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%`;
console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled`);
console.log("self:");
for (const [l, t] of [...selfBy].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(t)}  ${l}`);
console.log("inclusive:");
for (const [l, t] of [...inclBy].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(t)}  ${l}`);

// `node bench/profile-summary.ts FILE TOP NAME`: who calls NAME (self time by caller chain).
const focus = process.argv[4];
if (focus) {
  const chains = new Map<string, number>();
  for (const [id, t] of self) {
    if (!label(byId.get(id)!).startsWith(`${focus} `)) continue;
    const chain: string[] = [];
    for (let cur = parent.get(id); cur !== undefined && chain.length < 6; cur = parent.get(cur)) chain.push(byId.get(cur)!.callFrame.functionName || "(anonymous)");
    const key = chain.join(" < ");
    chains.set(key, (chains.get(key) ?? 0) + t);
  }
  console.log(`callers of ${focus}:`);
  for (const [k, t] of [...chains].sort((a, b) => b[1] - a[1]).slice(0, 10)) console.log(`${ms(t)}  ${k}`);
}
