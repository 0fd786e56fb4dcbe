import { RelayError } from "./errors.ts";

/**
 * One replica per database file. Two openers would each number their own
 * writes from the same counter (duplicate cseqs: writes lost) and each keep
 * their own place in the log; so the second one is refused with
 * `database_locked` instead. The lock is SQLite's own exclusive lock on a
 * small file beside the database: Node has no flock(), SQLite's locks are
 * held per file across connections of one process as well as between
 * processes, and the operating system drops them when a process dies (no
 * stale lock after a crash). Not the database file itself: an exclusive lock
 * there would also shut out readers (a backup, the sqlite3 shell).
 */
export interface FileLock {
  release(): void;
}

export function lockDatabaseFile(path: string): FileLock {
  const { DatabaseSync } = process.getBuiltinModule("node:sqlite");
  const lockPath = `${path}-relay-lock`;
  const db = new DatabaseSync(lockPath, { timeout: 0 });
  try {
    db.exec("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT");
  } catch (e) {
    db.close();
    if ((e as { errcode?: number }).errcode === 5 /* SQLITE_BUSY */) {
      throw new RelayError("database_locked", `${path} is open in another replica (in this process or another): close that one first`, { cause: e });
    }
    throw e;
  }
  return { release: () => db.close() };
}
