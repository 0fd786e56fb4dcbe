/**
 * The demo's one table; Node replicas of the demo's database open it with the
 * same statement. Keyed the way the README recommends: relay_id() (unique
 * across replicas) as the key's default, in a WITHOUT ROWID table (SQLite
 * ignores a DEFAULT on an INTEGER PRIMARY KEY rowid alias).
 */
export const DEMO_SCHEMA = [
  "CREATE TABLE IF NOT EXISTS todo(id INTEGER PRIMARY KEY DEFAULT (relay_id()), title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL) WITHOUT ROWID",
];
