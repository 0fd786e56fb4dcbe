import { decode, encode } from "../../protocol/codec.ts";
import { MSGPACK } from "../../protocol/version.ts";
import { DatabaseSync } from "node:sqlite";
import { request as httpRequest } from "node:http";

/** Raw protocol calls for relay tests: they check statuses and bodies, not the client library. */
export interface Reply {
  status: number;
  body: any;
}

async function reply(res: Response): Promise<Reply> {
  const bytes = new Uint8Array(await res.arrayBuffer());
  const type = res.headers.get("content-type") ?? "";
  const body = type.startsWith(MSGPACK) ? decode(bytes) : type.startsWith("application/json") ? JSON.parse(new TextDecoder().decode(bytes)) : bytes;
  return { status: res.status, body };
}

export async function pushRaw(url: string, db: string, token: string | undefined, body: Uint8Array, headers: Record<string, string> = {}): Promise<Reply> {
  const h: Record<string, string> = { "content-type": MSGPACK, ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  return reply(await fetch(`${url}/v1/db/${db}/push`, { method: "POST", body: body as Uint8Array<ArrayBuffer>, headers: h }));
}

/**
 * A push that declares the whole body's length but sends only its first
 * 64 KiB, then waits for the answer: a relay that refuses by the declared
 * length answers without reading the body. (Sending all of it races the
 * answer against the connection reset the relay's early close causes.)
 */
export function pushEarlyAnswer(url: string, db: string, token: string, body: Uint8Array): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/v1/db/${db}/push`, {
      method: "POST",
      headers: { "content-type": MSGPACK, "content-length": String(body.byteLength), authorization: `Bearer ${token}` },
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        req.destroy();
        resolve({ status: res.statusCode ?? 0, body: res.headers["content-type"]?.startsWith("application/json") ? JSON.parse(text) : text });
      });
    });
    req.on("error", reject);
    // A relay that waits for the rest never answers: fail instead of hanging.
    req.setTimeout(10_000, () => req.destroy(new Error("no answer while the body was incomplete")));
    req.write(body.subarray(0, 64 * 1024));
  });
}

export function push(url: string, db: string, token: string | undefined, client: string, entries: { cseq: number; changeset: Uint8Array; v?: number }[]): Promise<Reply> {
  return pushRaw(url, db, token, encode({ client, entries }));
}

export async function pull(url: string, db: string, token: string | undefined, after = 0, limit?: number): Promise<Reply> {
  const q = new URLSearchParams({ after: String(after), ...(limit ? { limit: String(limit) } : {}) });
  return reply(await fetch(`${url}/v1/db/${db}/pull?${q}`, { headers: token ? { authorization: `Bearer ${token}` } : {} }));
}

/** Every entry of the log, following `more`. */
export async function pullAll(url: string, db: string, token: string, from = 0): Promise<any[]> {
  const all: any[] = [];
  for (let after = from; ; ) {
    const r = await pull(url, db, token, after);
    if (r.status !== 200) throw new Error(`pull failed: ${r.status} ${JSON.stringify(r.body)}`);
    all.push(...r.body.entries);
    if (!r.body.more) return all;
    after = r.body.entries.at(-1).seq;
  }
}

/** Real changesets from real SQLite: `rows` inserts into t(id INTEGER PRIMARY KEY, v). */
export function insertChangeset(rows: Array<[number, unknown]>): Uint8Array {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
  const s = db.createSession();
  const ins = db.prepare("INSERT INTO t VALUES (?, ?)");
  db.exec("BEGIN");
  for (const [id, v] of rows) ins.run(id, v as any);
  db.exec("COMMIT");
  const cs = s.changeset();
  s.close();
  db.close();
  return cs;
}
