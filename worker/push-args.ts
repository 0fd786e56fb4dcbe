import type { TableHeader } from "../protocol/changeset.ts";
import type { PushEntry } from "../protocol/messages.ts";
import type { SchemaVersion } from "../protocol/schema.ts";

/**
 * How a validated push travels from the Worker to the log object. Workers RPC
 * caps serialized arguments at 32 MiB, below what MAX_BODY_BYTES may allow,
 * so a push whose changesets pass RPC_INLINE_BYTES sends them as one stream
 * of bytes (streams are not serialized whole) beside their sizes. Neither
 * form is decoded again: the object cuts the stream at the known sizes.
 */
export const RPC_INLINE_BYTES = 16 * 1024 * 1024;

/**
 * `tables`: each entry's table headers, as the Worker's validating scan read
 * them from these bytes (checkPushTables), so the object checks the schema
 * without scanning them again. The object trusts them as it trusts the
 * Worker's validation; without them (socket pushes) it scans.
 */
export type PushArgs = (
  | { entries: PushEntry[] }
  | { sizes: { cseq: number; size: number; v: number }[]; bytes: ReadableStream<Uint8Array> }
) & { tables?: TableHeader[][] };

export function toPushArgs(entries: PushEntry[], tables?: TableHeader[][]): PushArgs {
  const total = entries.reduce((n, e) => n + e.changeset.byteLength, 0);
  const headers = tables ? { tables } : {};
  if (total <= RPC_INLINE_BYTES) return { entries, ...headers };
  return {
    sizes: entries.map((e) => ({ cseq: e.cseq, size: e.changeset.byteLength, v: e.v ?? 0 })),
    bytes: new Blob(entries.map((e) => e.changeset as Uint8Array<ArrayBuffer>)).stream(),
    ...headers,
  };
}

export async function fromPushArgs(args: PushArgs): Promise<PushEntry[]> {
  if ("entries" in args) return args.entries;
  const all = new Uint8Array(await new Response(args.bytes).arrayBuffer());
  let at = 0;
  return args.sizes.map(({ cseq, size, v }) => ({ cseq, changeset: all.subarray(at, (at += size)), v }));
}

/**
 * How many entries and bytes a push carries, for admission (worker/admission.ts),
 * before it is read. A schema version's statements each count as an entry
 * (each runs DDL in the object) and their text as bytes
 * (characters: a unit is 64 KiB, so the difference does not matter).
 */
export function pushSize(args: PushArgs, schema: readonly SchemaVersion[] = []): { entries: number; bytes: number } {
  const sizes = "entries" in args ? args.entries.map((e) => e.changeset.byteLength) : args.sizes.map((s) => s.size);
  const statements = schema.flatMap((s) => s.statements);
  return {
    entries: sizes.length + statements.length,
    bytes: sizes.reduce((n, b) => n + b, 0) + statements.reduce((n, s) => n + s.length, 0),
  };
}
