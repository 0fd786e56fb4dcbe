/**
 * The shared workload definitions of issue 6 (kept exact: other engines are
 * measured on the same rows).
 */
export const TODOS_SCHEMA = "CREATE TABLE IF NOT EXISTS todos(id INTEGER PRIMARY KEY, title TEXT, done INTEGER, updated_at INTEGER)";
export const INSERT_TODO = "INSERT INTO todos(id, title, done, updated_at) VALUES (?, ?, ?, ?)";
export const UPDATE_TODO = "UPDATE todos SET done = ?, updated_at = ? WHERE id = ?";

const PAD = "abcdefghijklmnopqrstuvwxyz0123456789";

/** W1 row i (1..N): `title` is "todo i " right-padded to exactly 30 characters with PAD. */
export function w1Row(i: number): [id: number, title: string, done: number, updatedAt: number] {
  const head = `todo ${i} `;
  return [i, (head + PAD).slice(0, 30), i % 2, 1700000000000 + i];
}

/** W2 update k: `done = 1 - (k % 2)`, `updated_at = 1800000000000 + k` on row `id = k`. */
export function w2Update(k: number): [done: number, updatedAt: number, id: number] {
  return [1 - (k % 2), 1800000000000 + k, k];
}

/**
 * How W2's B also watches (issue 16): "point": W2_POINT_WATCHES watches of
 * `SELECT * FROM todos WHERE id = ?` on rows the run updates, spread over it
 * (each records when it saw its row's update); "unrelated": 100 watches on
 * tables the run never writes.
 */
export type W2Watch = "point" | "unrelated";
export const W2_POINT_WATCHES = 50;

/**
 * W1's push: one sync that must push the one entry and leave nothing
 * pending. A refusal is a result (W1 at 1,000,000 rows against an older
 * relay), not a crash: returned as "code: message" for the orchestrator.
 */
export async function pushW1(a: { sync(): Promise<{ pushed: number }>; status(): { pending: number } }): Promise<string | undefined> {
  try {
    const ev = await a.sync();
    if (ev.pushed !== 1 || a.status().pending !== 0) throw new Error(`w1: expected one entry pushed and confirmed, got ${JSON.stringify(ev)}`);
    return undefined;
  } catch (e) {
    return `${(e as { code?: string }).code ?? "error"}: ${(e as Error).message}`;
  }
}
