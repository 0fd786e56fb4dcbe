import { DurableObject } from "cloudflare:workers";
import { decode, encode } from "../protocol/codec.ts";
import { RelayError } from "../protocol/errors.ts";
import { parsePullQuery, parsePushRequest } from "../protocol/messages.ts";
import { PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX } from "../protocol/limits.ts";
import { MSGPACK } from "../protocol/version.ts";
import * as store from "./log-store.ts";
import { errorResponse } from "./errors.ts";
import type { Env } from "./env.ts";

/**
 * One Durable Object per database: the ordered changeset log. A thin adapter
 * from the runtime to the rules in log-store.ts. The Worker in front has
 * already authenticated the caller and validated every changeset; this object
 * only orders, stores and serves.
 */
export class ChangesetLog extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    store.migrate(this.sql);
  }

  override async fetch(request: Request): Promise<Response> {
    try {
      const url = new URL(request.url);
      if (url.pathname === "/push" && request.method === "POST") {
        const body = parsePushRequest(decode(new Uint8Array(await request.arrayBuffer())));
        // transactionSync: the push is all-or-nothing, and it is acknowledged
        // only after the write commits (the DO output gate holds the response).
        const res = this.ctx.storage.transactionSync(() => store.push(this.sql, body.client, body.entries, Date.now()));
        return msgpack(res);
      }
      if (url.pathname === "/pull" && request.method === "GET") {
        const q = parsePullQuery(url.searchParams.get("after") ?? undefined, url.searchParams.get("limit") ?? undefined, PULL_LIMIT_MAX, PULL_LIMIT_DEFAULT);
        return msgpack(store.pull(this.sql, q.after, q.limit));
      }
      throw new RelayError("not_found", `no route ${request.method} ${url.pathname} in the log object`);
    } catch (e) {
      return errorResponse(e);
    }
  }
}

function msgpack(value: unknown): Response {
  return new Response(encode(value), { headers: { "content-type": MSGPACK } });
}
