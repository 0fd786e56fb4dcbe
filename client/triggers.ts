import { RelayError } from "./errors.ts";
import type { Driver } from "./drivers/types.ts";
import { refuseNullKeys } from "./null-keys.ts";
import { schemaVersion } from "./store.ts";
import type { Tables } from "./tables.ts";

/**
 * Triggers on replay. The session extension records everything a write
 * transaction changed, trigger effects included, so a log entry already
 * holds what the origin's triggers did to replicated tables: a trigger that
 * fired again when the entry is applied (or when pending writes are undone
 * and redone in a rebase) would do it twice, and replicas would diverge. A
 * trigger that only keeps a local table (an FTS index) must fire, though,
 * or local search would never see remote rows.
 *
 * So every trigger is classified by what it writes, and:
 *   - one that writes only local tables (or views) runs always;
 *   - any other (it writes a replicated table, or only checks with RAISE) is
 *     rewritten once with `NOT relay_replaying()` ANDed into its WHEN clause:
 *     it runs on local writes exactly as declared and never during replay;
 *   - one that writes both, or checks beside a local write, is refused
 *     (`mixed_trigger`): half of it must run on replay and half must not.
 *     Splitting it ourselves would change the order its statements run in
 *     and leave a trigger the app never created (and would not drop); the
 *     app splits it in two instead.
 * Why not the other ways: SQLite can switch triggers off only all at once
 * (SQLITE_DBCONFIG_ENABLE_TRIGGER, which node:sqlite does not expose), and
 * asking users to write the guard themselves is a rule every app would have
 * to learn and could forget.
 *
 * What SQLite decides: which tables each trigger writes. Preparing (never
 * running) an INSERT, an UPDATE of every column and a DELETE on each table
 * or view with triggers compiles every trigger they would fire, nested ones
 * too, and the authorizer names the trigger behind each write
 * (Driver.writesOf): an upsert's DO UPDATE, REPLACE, a CTE, names in string
 * literals or comments are SQLite's to read, not ours. A write to a view
 * counts as local: a view stores nothing, and the INSTEAD OF triggers it
 * fires are classified (and guarded) on their own. A trigger no probe fires
 * (UPDATE OF a generated column only) is guarded: the safe side.
 * What text handling remains, and why: the authorizer has no report for
 * RAISE and none that marks where one body statement ends, so "a statement
 * that writes nothing" (SELECT, VALUES: a check) is read from the text, by
 * its leading verb; and the rewrite needs where WHEN and BEGIN are, which no
 * SQLite interface gives. Both read only the header and each statement's
 * first keyword, small and regular; SQLite parses the rewritten statement,
 * so a mistake is an error at open, not a silent change. A trigger that
 * already mentions relay_replaying is left as the app wrote it. Where the
 * driver has no authorizer (node:sqlite before Node 24.10) every trigger is
 * guarded: a local index then misses remote rows, but replicas never diverge.
 */
export const GUARD = "relay_replaying";

export type Writes = "local" | "replicated" | "mixed";

/** Guard every trigger that must not run on replay. `isLocal`: whether a table is local (see tables.ts). */
export function guardTriggers(d: Driver, isLocal: (table: string) => boolean): void {
  for (const { name, sql, t, writes } of classifyTriggers(d, isLocal)) {
    if (writes === "local") continue;
    if (writes === "mixed") {
      throw new RelayError("mixed_trigger", `trigger "${name}" writes both local and replicated tables: split it into one trigger for each (the local one runs when remote changes are applied, the other does not)`);
    }
    const guarded = guard(sql, t);
    d.exec(`DROP TRIGGER ${quote(name)}`);
    d.exec(guarded);
  }
}

/** The main database's triggers that do not guard themselves, each with what it writes. */
function classifyTriggers(d: Driver, isLocal: (table: string) => boolean): { name: string; sql: string; t: ParsedTrigger; writes: Writes }[] {
  const rows = d.all("SELECT name, tbl_name AS target, sql FROM sqlite_schema WHERE type = 'trigger' AND sql IS NOT NULL ORDER BY name") as { name: string; target: string; sql: string }[];
  const triggers = rows.map((r) => ({ ...r, t: parseTrigger(r.sql) })).filter(({ t }) => !t.tokens.some((k) => k.word === GUARD));
  if (triggers.length === 0) return [];
  const views = new Set(d.all("SELECT lower(name) AS name FROM sqlite_schema WHERE type = 'view'").map((r) => r.name as string));
  const isView = (table: string) => views.has(table.toLowerCase());
  const written = triggerWrites(d, new Set(triggers.map((r) => r.target)), isView);
  const localOrView = (table: string) => isLocal(table) || isView(table);
  return triggers.map(({ name, sql, t }) => {
    const writes: Writes = written === undefined ? "replicated" : classify(t, written.get(name) ?? new Set(), localOrView);
    return { name, sql, t, writes };
  });
}

/**
 * The tables each trigger writes, by trigger name, as SQLite reports them
 * while it prepares a write of each kind on the trigger's table (one UPDATE
 * setting every column: `UPDATE OF col` triggers fire on any of theirs).
 * undefined when the driver cannot tell.
 */
function triggerWrites(d: Driver, targets: Set<string>, isView: (name: string) => boolean): Map<string, Set<string>> | undefined {
  const out = new Map<string, Set<string>>();
  for (const target of targets) {
    const q = quote(target);
    // Generated columns cannot be SET.
    const columns = d.all("SELECT name FROM pragma_table_xinfo(?, 'main') WHERE hidden NOT IN (2, 3)", [target]).map((r) => quote(r.name as string));
    for (const probe of [`INSERT INTO main.${q} DEFAULT VALUES`, `UPDATE main.${q} SET ${columns.map((c) => `${c} = ${c}`).join(", ")}`, `DELETE FROM main.${q}`]) {
      let writes;
      try {
        writes = d.writesOf(probe);
      } catch (e) {
        if (isView(target)) continue; // "cannot modify": the view has no INSTEAD OF trigger for this kind of write
        // A trigger naming a table or column that does not exist: every write to the table fails too.
        throw new RelayError("bad_request", `cannot read the triggers on "${target}": ${(e as Error).message}`, { cause: e });
      }
      if (writes === undefined) return undefined;
      for (const { table, trigger } of writes) {
        if (trigger === null) continue;
        let set = out.get(trigger);
        if (!set) out.set(trigger, (set = new Set()));
        set.add(table);
      }
    }
  }
  return out;
}

const quote = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/**
 * After DDL (the app's migrations at open, the log's in a sync step, or DDL
 * through query()): guard the triggers it created, read the table list
 * again at the schema the guards leave, and refuse NULL keys on its tables.
 */
export function guardAfterDdl(d: Driver, tables: Tables): void {
  const version = schemaVersion(d);
  guardTriggers(d, (t) => tables.at(version).isLocal(t));
  refuseNullKeys(d, tables.at(schemaVersion(d)).replicated);
}

interface Token {
  /** Offset in the SQL text. */
  at: number;
  end: number;
  /** Lower-cased bare word, or the unquoted name of a quoted identifier; undefined for anything else. */
  word?: string;
  /** A quoted identifier (never a keyword). */
  quoted?: boolean;
  /** Punctuation: "(", ")", ";", ".", ","... */
  punct?: string;
}

export interface ParsedTrigger {
  tokens: Token[];
  /** Index of the WHEN keyword, or -1. */
  when: number;
  /** Index of the BEGIN that opens the body. */
  begin: number;
  /** The body's statements, as token index ranges [from, to). */
  statements: [number, number][];
}

/** SQL tokens, without whitespace and comments. */
export function tokenize(sql: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    if (/\s/.test(c)) i++;
    else if (sql.startsWith("--", i)) i = lineEnd(sql, i);
    else if (sql.startsWith("/*", i)) i = sql.includes("*/", i + 2) ? sql.indexOf("*/", i + 2) + 2 : sql.length;
    else if (c === "'" || c === '"' || c === "`" || c === "[") {
      const close = c === "[" ? "]" : c;
      let j = i + 1;
      let text = "";
      for (; j < sql.length; j++) {
        if (sql[j] === close) {
          if (close !== "]" && sql[j + 1] === close) {
            text += close;
            j++;
            continue;
          }
          break;
        }
        text += sql[j];
      }
      out.push(c === "'" ? { at: i, end: j + 1, punct: "'" } : { at: i, end: j + 1, word: text.toLowerCase(), quoted: true });
      i = j + 1;
    } else if (/[\p{L}\p{N}_$]/u.test(c)) {
      let j = i + 1;
      while (j < sql.length && /[\p{L}\p{N}_$]/u.test(sql[j]!)) j++;
      out.push({ at: i, end: j, word: sql.slice(i, j).toLowerCase() });
      i = j;
    } else {
      out.push({ at: i, end: i + 1, punct: c });
      i++;
    }
  }
  return out;
}

function lineEnd(sql: string, i: number): number {
  const n = sql.indexOf("\n", i);
  return n === -1 ? sql.length : n;
}

const keyword = (t: Token | undefined, w: string): boolean => t !== undefined && !t.quoted && t.word === w;

/**
 * CREATE [TEMP] TRIGGER [IF NOT EXISTS] name [BEFORE|AFTER|INSTEAD OF] event ON table
 * [FOR EACH ROW] [WHEN expr] BEGIN stmt; ... END
 * ON is reserved (it cannot be an unquoted name), so the first bare ON is the
 * one before the table. In the WHEN expression, BEGIN can only be the body's
 * outside parentheses and CASE ... END (a column is NEW.x or OLD.x there).
 */
export function parseTrigger(sql: string): ParsedTrigger {
  const tokens = tokenize(sql);
  const fail = (why: string): never => {
    throw new RelayError("bad_request", `cannot read trigger (${why}): ${sql}`);
  };
  let i = tokens.findIndex((t) => keyword(t, "on"));
  if (i < 0) fail("no ON");
  i += 2; // ON, the table
  if (tokens[i]?.punct === ".") i += 2; // schema.table
  if (keyword(tokens[i], "for")) i += 3; // FOR EACH ROW
  let when = -1;
  if (keyword(tokens[i], "when")) {
    when = i;
    let depth = 0;
    let cases = 0;
    for (i++; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (t.punct === "(") depth++;
      else if (t.punct === ")") depth--;
      else if (tokens[i - 1]?.punct === ".") continue;
      else if (keyword(t, "case")) cases++;
      else if (keyword(t, "end") && cases > 0) cases--;
      else if (keyword(t, "begin") && depth === 0 && cases === 0) break;
    }
  }
  if (!keyword(tokens[i], "begin")) fail("no BEGIN");
  const begin = i;
  const statements: [number, number][] = [];
  let from = begin + 1;
  for (let j = from; j < tokens.length; j++) {
    if (tokens[j]!.punct === ";") {
      statements.push([from, j]);
      from = j + 1;
    }
  }
  if (statements.length === 0) fail("empty body");
  return { tokens, when, begin, statements };
}

/**
 * What a trigger writes, from the tables SQLite reported (`written`) and its
 * checks: "local" when it writes local tables only and checks nothing,
 * "mixed" when it also writes a replicated table or checks, else "replicated".
 */
export function classify(t: ParsedTrigger, written: ReadonlySet<string>, isLocal: (table: string) => boolean): Writes {
  const local = [...written].some(isLocal);
  const replicated = [...written].some((table) => !isLocal(table)) || t.statements.some(([from, to]) => checks(t.tokens.slice(from, to)));
  return !local ? "replicated" : replicated ? "mixed" : "local";
}

/**
 * Whether one trigger statement writes nothing (SELECT, VALUES: it can only
 * check, with RAISE). Its verb is its first keyword outside parentheses (a
 * leading WITH clause's statements sit inside them).
 */
function checks(s: Token[]): boolean {
  let depth = 0;
  for (const t of s) {
    if (t.punct === "(") depth++;
    else if (t.punct === ")") depth--;
    if (depth !== 0 || t.quoted) continue;
    if (t.word === "select" || t.word === "values") return true;
    if (t.word === "insert" || t.word === "replace" || t.word === "update" || t.word === "delete") return false;
  }
  return false;
}

/** The trigger's SQL with NOT relay_replaying() ANDed into its WHEN clause. */
export function guard(sql: string, t: ParsedTrigger): string {
  const begin = t.tokens[t.begin]!;
  if (t.when < 0) return `${sql.slice(0, begin.at)}WHEN NOT ${GUARD}() ${sql.slice(begin.at)}`;
  const when = t.tokens[t.when]!;
  // Up to the expression's last token: a comment after it could swallow the ")".
  const exprEnd = t.tokens[t.begin - 1]!.end;
  return `${sql.slice(0, when.end)} NOT ${GUARD}() AND (${sql.slice(when.end, exprEnd)}) ${sql.slice(exprEnd)}`;
}
