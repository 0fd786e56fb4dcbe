/**
 * CPU profiles of the relay's JavaScript (the Worker and the Durable Object,
 * one isolate: "core:user:") through workerd's V8 inspector, for
 * `npm run bench -- --cpu-prof`. Native time (SQLite, zlib, sockets) shows as
 * the JS frames that called it, or as (program)/(idle).
 */
export interface RelayProfiler {
  stop(): Promise<unknown>;
}

export async function profileRelay(port: number): Promise<RelayProfiler> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { id: string; webSocketDebuggerUrl: string }[];
  const target = targets.find((t) => t.id === "core:user:");
  if (!target) throw new Error("no core:user: target in workerd's inspector");
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  const pending = new Map<number, (result: unknown) => void>();
  let next = 0;
  ws.onmessage = (ev) => {
    const m = JSON.parse(String(ev.data)) as { id?: number; result?: unknown };
    if (m.id !== undefined) pending.get(m.id)?.(m.result);
  };
  await new Promise((resolve, reject) => ((ws.onopen = resolve), (ws.onerror = reject)));
  const call = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve) => {
      const id = ++next;
      pending.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 500 });
  await call("Profiler.start");
  return {
    async stop() {
      const { profile } = (await call("Profiler.stop")) as { profile: unknown };
      ws.close();
      return profile;
    },
  };
}
