import type { SchemaCache } from "./apply.ts";
import type { ConflictOptions, ConflictRecord } from "./conflicts.ts";
import type { Driver } from "./drivers/types.ts";
import * as outbox from "./outbox.ts";
import { reapply, undo } from "./rebase.ts";

/**
 * Drop pending entry `cseq` — one the relay refused for good, dropped only
 * when the app asks (Replica.discardBlocked) — and what it did locally. The
 * pending entries after it are undone and re-applied on top, as a rebase
 * re-applies them, so they now hold what they mean without it. Inside the
 * caller's transaction. Returns the conflicts of the re-application.
 */
export function discardPending(d: Driver, me: string, cseq: number, policy: ConflictOptions, schema: SchemaCache): ConflictRecord[] {
  const pending = outbox.pending(d);
  const at = pending.findIndex((p) => p.cseq === cseq);
  if (at < 0) return [];
  for (const p of [...pending.slice(at)].reverse()) undo(d, p.applied);
  outbox.dequeue(d, cseq);
  return reapply(d, me, pending.slice(at + 1), policy, schema);
}
