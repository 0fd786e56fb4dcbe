/**
 * The part of node:zlib the relay uses. workerd provides node:zlib (natively,
 * with the nodejs_compat flag wrangler.toml sets); @cloudflare/workers-types
 * does not describe it, and Node's types would bring Node's globals along.
 */
declare module "node:zlib" {
  interface ZlibStream {
    on(event: "data", listener: (chunk: Uint8Array) => void): this;
    on(event: "end" | "close", listener: () => void): this;
    on(event: "error", listener: (error: Error) => void): this;
    write(chunk: Uint8Array): boolean;
    end(): void;
    destroy(): void;
  }
  export function createGunzip(options?: { chunkSize?: number }): ZlibStream;
  export function gzipSync(data: Uint8Array, options?: { level?: number }): Uint8Array;
}
