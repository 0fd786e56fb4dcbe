import { RelayError } from "./errors.ts";
import { MAX_SCHEMA_VERSION_BYTES } from "./limits.ts";
import { array, bad, map, positiveInt } from "./validate.ts";

/**
 * The schema in the log (DESIGN.md, "Schema in the log"), the part both sides
 * share: what a migration may contain, how a statement is read, the shape of
 * a table at a version, and how a version's statements move columns (for
 * translating writes captured under an older version).
 *
 * A migration is a list of statements, one schema statement each:
 * CREATE/ALTER/DROP of TABLE, INDEX, VIEW, TRIGGER and CREATE VIRTUAL TABLE.
 * Not data (INSERT, UPDATE…: a replica's data comes from the log, nowhere
 * else), not TEMP objects, not CREATE TABLE … AS SELECT, nothing under the
 * reserved prefixes. SQLite itself validates the rest, on the relay.
 * A version's identity is its statements, compared exactly: once in the log a
 * version never changes, and a different list under the same number is
 * `schema_conflict`.
 */

export type Statements = readonly string[];

/** One version as it travels in a push (`schema`) before the entries captured under it. */
export interface SchemaVersion {
  version: number;
  statements: string[];
}

/** Names of the relay's and SQLite's own objects (and Cloudflare's, in the Durable Object). */
export const RESERVED_PREFIXES = ["relay_", "_relay_", "sqlite_", "_cf_"] as const;

export function isReserved(name: string): boolean {
  const n = name.toLowerCase();
  return RESERVED_PREFIXES.some((p) => n.startsWith(p));
}

/** The canonical text of a version's statements: what "the same version" means. */
export function statementsKey(statements: Statements): string {
  return JSON.stringify(statements);
}

export function parseSchemaVersions(v: unknown): SchemaVersion[] {
  const out = array(v, "schema").map((s, i) => {
    const o = map(s, `schema[${i}]`);
    const statements = array(o.statements, `schema[${i}].statements`).map((x, j) => {
      if (typeof x !== "string") bad(`schema[${i}].statements[${j}] must be a string`);
      return x;
    });
    return { version: positiveInt(o.version, `schema[${i}].version`), statements };
  });
  out.forEach((s, i) => {
    if (i > 0 && s.version !== out[i - 1]!.version + 1) bad(`schema[${i}].version must follow the previous version directly`);
  });
  return out;
}

// ------------------------------------------------------------- statements

interface Token {
  /** word: a keyword or bare identifier; id: a quoted identifier; other: literals and punctuation. */
  kind: "word" | "id" | "semi" | "dot" | "other";
  /** word: upper-cased; id: the identifier it names. */
  text: string;
  /** As written (a bare name keeps its spelling). */
  raw: string;
}

function refused(message: string): never {
  throw new RelayError("schema_refused", message);
}

/**
 * SQLite's tokens, as far as telling statements apart needs: comments and
 * whitespace dropped, strings and quoted identifiers read whole.
 */
function tokenize(sql: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === "-" && sql[i + 1] === "-") {
      const end = sql.indexOf("\n", i);
      i = end < 0 ? n : end + 1;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === "'" || c === '"' || c === "`") {
      let j = i + 1;
      let text = "";
      for (;;) {
        if (j >= n) refused(`unterminated ${c === "'" ? "string" : "quoted identifier"} in ${JSON.stringify(sql)}`);
        if (sql[j] === c) {
          if (sql[j + 1] === c) {
            text += c;
            j += 2;
            continue;
          }
          break;
        }
        text += sql[j++];
      }
      out.push({ kind: c === "'" ? "other" : "id", text, raw: text });
      i = j + 1;
    } else if (c === "[") {
      const end = sql.indexOf("]", i);
      if (end < 0) refused(`unterminated [identifier] in ${JSON.stringify(sql)}`);
      out.push({ kind: "id", text: sql.slice(i + 1, end), raw: sql.slice(i + 1, end) });
      i = end + 1;
    } else if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$\u0080-\uffff]/.test(sql[j]!)) j++;
      out.push({ kind: "word", text: sql.slice(i, j).toUpperCase(), raw: sql.slice(i, j) });
      i = j;
    } else {
      out.push({ kind: c === ";" ? "semi" : c === "." ? "dot" : "other", text: c, raw: c });
      i++;
    }
  }
  return out;
}

/**
 * The tokens of the one statement in `sql`; anything after it but `;` is
 * refused (the relay runs each string as it is, and a second statement could
 * be anything). A trigger's body holds `;`s: like sqlite3_complete, a CREATE
 * TRIGGER ends at `; END`.
 */
function oneStatement(sql: string): Token[] {
  const t = tokenize(sql);
  const isTrigger = t[0]?.text === "CREATE" && (t[1]?.text === "TRIGGER" || (/^TEMP(ORARY)?$/.test(t[1]?.text ?? "") && t[2]?.text === "TRIGGER"));
  let end = t.length;
  for (let i = 0; i < t.length; i++) {
    if (isTrigger ? t[i]!.kind === "word" && t[i]!.text === "END" && t[i - 1]?.kind === "semi" : t[i]!.kind === "semi") {
      end = isTrigger ? i + 1 : i;
      break;
    }
  }
  if (t.slice(end).some((x) => x.kind !== "semi")) refused(`one statement per string: ${JSON.stringify(sql)}`);
  if (end === 0) refused("empty statement");
  return t.slice(0, end);
}

/** What a statement does, as far as the rules and the translation of writes need. */
export type Statement =
  | { op: "create"; type: "table" | "virtual" | "index" | "view" | "trigger"; name: string; table?: string }
  | { op: "drop"; type: "table" | "index" | "view" | "trigger"; name: string }
  | { op: "alter"; name: string; renameTo?: string; renameColumn?: { from: string; to: string }; addColumn?: string; dropColumn?: string };

class Reader {
  private i = 0;
  private readonly t: Token[];
  private readonly sql: string;
  constructor(t: Token[], sql: string) {
    this.t = t;
    this.sql = sql;
  }
  peek(offset = 0): Token | undefined {
    return this.t[this.i + offset];
  }
  is(...words: string[]): boolean {
    return words.every((w, k) => this.peek(k)?.kind === "word" && this.peek(k)!.text === w);
  }
  /** Consumes `words` when they come next. */
  take(...words: string[]): boolean {
    if (!this.is(...words)) return false;
    this.i += words.length;
    return true;
  }
  expect(word: string): void {
    if (!this.take(word)) this.fail(`expected ${word}`);
  }
  /** An object name, optionally `main.`-qualified (ATTACH and TEMP are not part of a replicated schema). */
  name(): string {
    const first = this.ident();
    if (this.peek()?.kind !== "dot") return first;
    this.i++;
    if (first.toLowerCase() !== "main") refused(`only the main schema can be changed, not "${first}": ${JSON.stringify(this.sql)}`);
    return this.ident();
  }
  ident(): string {
    const tok = this.peek();
    if (!tok || (tok.kind !== "word" && tok.kind !== "id")) this.fail("expected a name");
    this.i++;
    return tok.raw;
  }
  skipUntil(word: string): void {
    while (this.peek() && !this.is(word)) this.i++;
  }
  fail(why: string): never {
    return refused(`not a schema statement (${why}): ${JSON.stringify(this.sql)}`);
  }
}

/**
 * Reads one statement of a migration and refuses what a migration may not
 * hold (see the top of this file). Names are checked against the reserved
 * prefixes; SQLite checks everything else when the relay runs it.
 */
export function readStatement(sql: string): Statement {
  const r = new Reader(oneStatement(sql), sql);
  const s = statementOf(r);
  for (const name of [s.name, "table" in s ? s.table : undefined, "renameTo" in s ? s.renameTo : undefined]) {
    if (name !== undefined && isReserved(name)) refused(`the name "${name}" is reserved (${RESERVED_PREFIXES.join(", ")})`);
  }
  return s;
}

function statementOf(r: Reader): Statement {
  if (r.take("CREATE")) {
    if (r.is("TEMP") || r.is("TEMPORARY")) return r.fail("TEMP objects do not replicate");
    if (r.take("VIRTUAL", "TABLE")) {
      r.take("IF", "NOT", "EXISTS");
      return { op: "create", type: "virtual", name: r.name() };
    }
    if (r.take("TABLE")) {
      r.take("IF", "NOT", "EXISTS");
      const name = r.name();
      if (r.is("AS")) return r.fail("CREATE TABLE … AS SELECT copies data, and a migration holds none");
      return { op: "create", type: "table", name };
    }
    const unique = r.take("UNIQUE");
    if (r.take("INDEX")) {
      r.take("IF", "NOT", "EXISTS");
      const name = r.name();
      r.expect("ON");
      return { op: "create", type: "index", name, table: r.ident() };
    }
    if (unique) return r.fail("UNIQUE goes with INDEX");
    if (r.take("VIEW")) {
      r.take("IF", "NOT", "EXISTS");
      return { op: "create", type: "view", name: r.name() };
    }
    if (r.take("TRIGGER")) {
      r.take("IF", "NOT", "EXISTS");
      const name = r.name();
      r.skipUntil("ON");
      r.expect("ON");
      return { op: "create", type: "trigger", name, table: r.name() };
    }
    return r.fail("CREATE of what?");
  }
  if (r.take("DROP")) {
    const type = r.take("TABLE") ? "table" : r.take("INDEX") ? "index" : r.take("VIEW") ? "view" : r.take("TRIGGER") ? "trigger" : r.fail("DROP of what?");
    r.take("IF", "EXISTS");
    return { op: "drop", type, name: r.name() };
  }
  if (r.take("ALTER", "TABLE")) {
    const name = r.name();
    if (r.take("RENAME", "TO")) return { op: "alter", name, renameTo: r.ident() };
    if (r.take("RENAME")) {
      r.take("COLUMN");
      const from = r.ident();
      r.expect("TO");
      return { op: "alter", name, renameColumn: { from, to: r.ident() } };
    }
    if (r.take("ADD")) {
      r.take("COLUMN");
      return { op: "alter", name, addColumn: r.ident() };
    }
    if (r.take("DROP")) {
      r.take("COLUMN");
      return { op: "alter", name, dropColumn: r.ident() };
    }
    return r.fail("ALTER TABLE … RENAME, ADD or DROP");
  }
  return r.fail("only CREATE, ALTER and DROP of tables, indexes, views and triggers");
}

/** Every statement of every version, read; the first refusal names its version and statement. */
export function checkMigrations(versions: readonly Statements[], first = 1): Statement[][] {
  return versions.map((statements, k) => {
    const bytes = utf8.encode(statementsKey(statements)).byteLength;
    if (bytes > MAX_SCHEMA_VERSION_BYTES) {
      throw new RelayError("payload_too_large", `version ${first + k}: ${bytes} bytes of statements, at most ${MAX_SCHEMA_VERSION_BYTES} (MAX_SCHEMA_VERSION_BYTES)`);
    }
    return statements.map((sql, i) => {
      try {
        return readStatement(sql);
      } catch (e) {
        if (e instanceof RelayError) throw new RelayError(e.code, `version ${first + k}, statement ${i + 1}: ${e.message}`);
        throw e;
      }
    });
  });
}

const utf8 = new TextEncoder();

// ------------------------------------------------------------- table shapes

/** A column as pragma_table_xinfo reports it. */
export interface ColumnShape {
  name: string;
  /** 1-based position in the PRIMARY KEY, 0 outside it. */
  pk: number;
  /** 0 ordinary; 1 hidden (virtual tables); 2, 3 generated (virtual, stored): not in changesets. */
  hidden: number;
  /** The DEFAULT expression as SQL text, or null. */
  dflt: string | null;
}

/**
 * A table at one schema version. `local` tables never replicate, so no entry
 * may touch them: virtual tables and their shadow tables, and tables without
 * a PRIMARY KEY (the session extension cannot capture them; the client
 * refuses those at open unless it declares them local).
 */
export interface TableShape {
  name: string;
  columns: ColumnShape[];
  local: boolean;
}

/**
 * The query both sides run for the shapes of every table of the app's
 * schema (relay: in the Durable Object; replicas: in their database),
 * after each version. One row per column.
 */
export const SHAPES_QUERY = `
  SELECT l.name AS tbl, l.type AS type, c.name AS name, c.pk AS pk, c.hidden AS hidden, c.dflt_value AS dflt
  FROM pragma_table_list AS l JOIN pragma_table_xinfo(l.name) AS c
  WHERE l.schema = 'main' AND l.type IN ('table', 'virtual', 'shadow')
    AND lower(l.name) NOT GLOB 'relay_*' AND lower(l.name) NOT GLOB '_relay_*' AND lower(l.name) NOT GLOB 'sqlite_*' AND lower(l.name) NOT GLOB '_cf_*'
  ORDER BY l.name, c.cid`;

export type ShapeRow = { tbl: string; type: string; name: string; pk: number; hidden: number; dflt: string | null };

export function shapesFromRows(rows: Iterable<ShapeRow>): TableShape[] {
  const out: TableShape[] = [];
  for (const r of rows) {
    let t = out.at(-1);
    if (t?.name !== r.tbl) out.push((t = { name: r.tbl, columns: [], local: r.type !== "table" }));
    t!.columns.push({ name: r.name, pk: Number(r.pk), hidden: Number(r.hidden), dflt: r.dflt });
  }
  for (const t of out) if (!t.columns.some((c) => c.pk > 0)) t.local = true;
  return out;
}

/** The columns a changeset of this table holds, in order (generated and hidden ones are not captured). */
export function capturedColumns(t: TableShape): ColumnShape[] {
  return t.columns.filter((c) => c.hidden === 0);
}

/** Tables by lower-cased name (SQLite compares names case-insensitively). */
export function byName(shapes: readonly TableShape[]): Map<string, TableShape> {
  return new Map(shapes.map((t) => [t.name.toLowerCase(), t]));
}

/**
 * Why a changeset table header does not fit `shape` (undefined: it fits):
 * the same column count and the same primary-key flags, position for
 * position (what sqlite3changeset_apply compares).
 */
export function shapeMismatch(shape: TableShape | undefined, header: { name: string; pk: readonly boolean[]; pkRaw?: Uint8Array }): string | undefined {
  if (!shape) return `no table "${header.name}" in this schema version`;
  if (shape.local) return `table "${header.name}" is local-only (virtual, shadow or without a PRIMARY KEY)`;
  const cols = capturedColumns(shape);
  if (cols.length !== header.pk.length) return `table "${header.name}" has ${cols.length} columns in this schema version, the changeset ${header.pk.length}`;
  const i = cols.findIndex((c, i) => c.pk !== (header.pkRaw?.[i] ?? 0));
  return i < 0 ? undefined : `table "${header.name}": primary key differs at column ${i} ("${cols[i]!.name}")`;
}
