/** The demo's one table; Node replicas of the demo's database open it with the same statement. */
export const DEMO_SCHEMA = [
  "CREATE TABLE IF NOT EXISTS todo(id TEXT PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL)",
];
