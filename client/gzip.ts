import { GZIP } from "../protocol/compression.ts";

/** The client's side of push compression (protocol/compression.ts has the rules). */

interface NodeZlib {
  gzip(data: Uint8Array, options: { level: number }, callback: (error: Error | null, result: Uint8Array) => void): void;
}

/** node:zlib where the runtime has it (asked at run time, so bundlers for browsers never see it). */
const nodeZlib = (() => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
    return proc?.getBuiltinModule?.("node:zlib") as NodeZlib | undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Gzip a body. CompressionStream has no level and compresses at zlib's
 * default (6); where node:zlib is at hand, level 1 on its thread pool: four
 * times less CPU (~22 ms instead of ~90 for W1's 6 MB push) for 10.9 instead
 * of 8.2 bytes per row.
 */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  if (nodeZlib) {
    const zlib = nodeZlib;
    return new Promise((resolve, reject) =>
      zlib.gzip(bytes, { level: 1 }, (error, result) => (error ? reject(error) : resolve(result as Uint8Array<ArrayBuffer>))),
    );
  }
  return gzipStream(bytes);
}

/** Gzip with CompressionStream, which every runtime has (browsers, workerd, Deno, Bun, Node). */
export async function gzipStream(bytes: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream(GZIP));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
