import { DatabaseSync } from "node:sqlite";

/** A real changeset: `ddl`, then `dml` recorded by a session, in a scratch node:sqlite database. */
export function captured(ddl: string, dml: string): Uint8Array {
  const d = new DatabaseSync(":memory:");
  d.exec(ddl);
  const s = d.createSession();
  d.exec(dml);
  const cs = s.changeset();
  s.close();
  d.close();
  return cs;
}
