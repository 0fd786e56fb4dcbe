import { Miniflare } from "miniflare";
import { signToken, type Role } from "../../protocol/token.ts";
import { LOCAL_SECRET, relayOptions, type RelayOptions } from "../../scripts/local-relay.ts";

/**
 * The real relay in workerd via Miniflare (scripts/local-relay.ts). Tests
 * talk to it over real HTTP; most get it through useRelay() (fixture.ts).
 */
export const TEST_SECRET = LOCAL_SECRET;
export type { RelayOptions };

export interface TestRelay {
  url: string;
  mf: Miniflare;
  token(role: Role, sub: string, db?: string, ttl?: number): Promise<string>;
  close(): Promise<void>;
}

export async function startRelay(opts: RelayOptions = {}): Promise<TestRelay> {
  const mf = new Miniflare(await relayOptions(opts));
  const url = (await mf.ready).toString().replace(/\/$/, "");
  return {
    url,
    mf,
    token: (role, sub, db = "*", ttl) => signToken({ db, role, sub }, TEST_SECRET, ttl),
    close: () => mf.dispose(),
  };
}
