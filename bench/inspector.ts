/**
 * workerd's V8 inspector, for the relay's JavaScript (the Worker and the
 * Durable Object, one isolate: "core:user:"): CPU profiles for
 * `npm run bench -- --cpu-prof`, and the JS heap's size while a workload runs
 * (every run of `npm run bench`, and `npm run test:load`). Native time
 * (SQLite, zlib, sockets) shows as the JS frames that called it, or as
 * (program)/(idle); native memory is in the process's RSS, not the heap.
 */
import { RawWebSocket } from "../scripts/raw-ws.ts";

export interface Inspector {
  call(method: string, params?: object): Promise<unknown>;
  close(): void;
}

export async function connectInspector(port: number): Promise<Inspector> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { id: string; webSocketDebuggerUrl: string }[];
  // workerd names the user worker's isolate "core:user:"; wrangler dev's inspector proxy lists only it.
  const target = targets.find((t) => t.id === "core:user:") ?? (targets.length === 1 ? targets[0] : undefined);
  if (!target) throw new Error(`no core:user: target in the inspector at ${port}: ${targets.map((t) => t.id).join(", ")}`);
  // Not fetch's WebSocket: wrangler dev's inspector proxy refuses its upgrade (the headers it sends).
  const ws = await RawWebSocket.open(target.webSocketDebuggerUrl);
  const pending = new Map<number, (result: unknown) => void>();
  let next = 0;
  ws.onmessage = (data) => {
    const m = JSON.parse(String(data)) as { id?: number; result?: unknown };
    if (m.id !== undefined) pending.get(m.id)?.(m.result);
  };
  return {
    call: (method, params = {}) =>
      new Promise<unknown>((resolve) => {
        const id = ++next;
        pending.set(id, resolve);
        ws.send(JSON.stringify({ id, method, params }));
      }),
    close: () => ws.close(),
  };
}

export interface RelayProfiler {
  stop(): Promise<unknown>;
}

export async function profileRelay(inspector: Inspector): Promise<RelayProfiler> {
  await inspector.call("Profiler.enable");
  await inspector.call("Profiler.setSamplingInterval", { interval: 500 });
  await inspector.call("Profiler.start");
  return {
    async stop() {
      const { profile } = (await inspector.call("Profiler.stop")) as { profile: unknown };
      return profile;
    },
  };
}

/** The relay's JS heap (V8's used size, garbage not yet collected included), sampled every `everyMs`: its peak since the last reset, in bytes. */
export interface HeapSampler {
  current(): Promise<number>;
  reset(): void;
  peak(): number;
  stop(): void;
}

export function sampleHeap(inspector: Inspector, everyMs = 100): HeapSampler {
  const used = async () => ((await inspector.call("Runtime.getHeapUsage")) as { usedSize: number }).usedSize;
  let peak = 0;
  const timer = setInterval(() => void used().then((u) => (peak = Math.max(peak, u))), everyMs);
  return {
    current: async () => {
      const u = await used();
      peak = Math.max(peak, u);
      return u;
    },
    reset: () => (peak = 0),
    peak: () => peak,
    stop: () => clearInterval(timer),
  };
}
