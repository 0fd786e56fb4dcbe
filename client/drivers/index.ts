import type { Driver, DriverKind } from "./types.ts";

export type { Driver, DriverKind, Params, Row, Session, ConflictType, Resolution } from "./types.ts";
export { CONFLICT, RESOLUTION } from "./types.ts";

/**
 * Opens a database with the given driver. Drivers are imported on demand so a
 * browser never loads the node:sqlite one, and Node never instantiates the
 * wasm module unless asked to.
 */
export async function openDriver(kind: DriverKind, path: string): Promise<Driver> {
  switch (kind) {
    case "node":
      return (await import("./node.ts")).openNode(path);
    case "wasm":
      return (await import("./wasm.ts")).openWasm(path);
  }
}

/** "node" on Node >= 22.13 with node:sqlite sessions, else "wasm". */
export function defaultDriverKind(): DriverKind {
  const proc = (globalThis as { process?: NodeLikeProcess }).process;
  const version = proc?.versions?.node;
  if (version === undefined || !atLeast(version, [22, 13])) return "wasm";
  try {
    // Other runtimes report a Node version too; only the API itself is proof.
    const sqlite = proc?.getBuiltinModule?.("node:sqlite") as { DatabaseSync?: { prototype?: object } } | undefined;
    const proto = sqlite?.DatabaseSync?.prototype as Record<string, unknown> | undefined;
    return typeof proto?.["createSession"] === "function" && typeof proto["applyChangeset"] === "function" ? "node" : "wasm";
  } catch {
    return "wasm";
  }
}

interface NodeLikeProcess {
  versions?: { node?: string };
  getBuiltinModule?: (id: string) => unknown;
}

function atLeast(version: string, min: readonly [number, number]): boolean {
  const [major = 0, minor = 0] = version.split(".").map(Number);
  return major > min[0] || (major === min[0] && minor >= min[1]);
}
