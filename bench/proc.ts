import { readdirSync, readFileSync, writeFileSync } from "node:fs";

/** Linux /proc readings: memory and CPU of a process tree (the relay is workerd under a Node host). */

function status(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
}

function kb(text: string | undefined, field: string): number {
  const m = text?.match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Number(m[1]) : 0;
}

/** All live descendants of `root` (not root itself). */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // comm may hold spaces and parentheses: the fields after the last ')' are fixed.
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(d), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [pid, pp] of parent) if (pp === p) (out.push(pid), walk(pid));
  };
  walk(root);
  return out;
}

/** Processes named `name` (comm) under root. */
export function findByName(root: number, name: string): number[] {
  return descendants(root).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === name;
    } catch {
      return false;
    }
  });
}

/** Peak (VmHWM) and current (VmRSS) resident set of processes, in bytes, summed. */
export function memory(pids: number[]): { peak: number; rss: number } {
  let peak = 0;
  let rss = 0;
  for (const pid of pids) {
    const s = status(pid);
    peak += kb(s, "VmHWM") * 1024;
    rss += kb(s, "VmRSS") * 1024;
  }
  return { peak, rss };
}

/** Reset the peak-RSS mark to the current RSS (Linux >= 4.0; needs write access to /proc/PID/clear_refs). */
export function resetPeak(pids: number[]): boolean {
  let ok = true;
  for (const pid of pids) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, "5");
    } catch {
      ok = false;
    }
  }
  return ok;
}

const TICK_MS = 1000 / 100; // USER_HZ is 100 on every Linux we run on

/** User + system CPU time of processes, in ms. */
export function cpuMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
    } catch {
      // exited
    }
  }
  return ticks * TICK_MS;
}

export function selfPeakRss(): number {
  return kb(status(process.pid), "VmHWM") * 1024;
}

/** 1-minute load average and core count, for the report. */
export function machine(): { load1: number; load5: number; cores: number; cpu: string; memGiB: number } {
  const [l1, l5] = readFileSync("/proc/loadavg", "utf8").split(" ").map(Number);
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const cpu = cpuinfo.match(/model name\s*:\s*(.*)/)?.[1]?.trim() ?? "unknown";
  const cores = (cpuinfo.match(/^processor\s*:/gm) ?? []).length;
  const memGiB = kb(readFileSync("/proc/meminfo", "utf8").replace("MemTotal", "MemTotal"), "MemTotal") / 1024 / 1024;
  return { load1: l1 ?? 0, load5: l5 ?? 0, cores, cpu, memGiB: Math.round(memGiB) };
}

/**
 * CPU time and run-queue wait of processes, in ms, summed over all their
 * threads or only the main one (/proc/PID/task/TID/schedstat): the wait is
 * how long a thread was ready to run while no core was free for it.
 */
export function schedMs(pids: number[], mainThread = false): { cpu: number; wait: number } {
  let cpu = 0;
  let wait = 0;
  for (const pid of pids) {
    let tasks: string[] = [];
    try {
      tasks = mainThread ? [String(pid)] : readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // exited
    }
    for (const tid of tasks) {
      try {
        const [run, queued] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number);
        cpu += run! / 1e6;
        wait += queued! / 1e6;
      } catch {
        // exited meanwhile
      }
    }
  }
  return { cpu, wait };
}
