import type { SchemaCache } from "./apply.ts";
import type { ConflictOptions, ConflictRecord } from "./conflicts.ts";
import type { Driver } from "./drivers/types.ts";
import type { SchemaState } from "./migrate.ts";
import * as outbox from "./outbox.ts";
import { redo, undo, type Dropped } from "./rebase.ts";

/**
 * Drop pending entry `cseq` — one the relay refused for good, dropped only
 * when the app asks (Replica.discardBlocked) — and what it did locally. The
 * pending entries after it are undone and re-applied on top as a rebase
 * re-applies them (translated to the local schema version when they were
 * captured under another), so they now hold what they mean without it.
 * Inside the caller's transaction, replaying (triggers stay still). Returns
 * the re-application's conflicts and what translation dropped, and the
 * entries it touched.
 */
export function discardPending(d: Driver, me: string, cseq: number, policy: ConflictOptions, schema: SchemaCache, versions: SchemaState): { conflicts: ConflictRecord[]; dropped: Dropped[]; touched: outbox.OutboxRow[] } {
  const pending = outbox.pending(d);
  const at = pending.findIndex((p) => p.cseq === cseq);
  if (at < 0) return { conflicts: [], dropped: [], touched: [] };
  const touched = pending.slice(at);
  undo(d, touched);
  outbox.dequeue(d, cseq);
  return { ...redo(d, me, touched.slice(1), policy, schema, versions), touched };
}
