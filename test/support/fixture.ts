import { after, before } from "node:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../scripts/local-relay.ts";
import { startRelay, type TestRelay } from "./relay.ts";
import { closeReplicas } from "./replicas.ts";

export interface RelayFixture extends TestRelay {
  /** A database name no other test in this file used. */
  db(name: string): string;
  /** A scratch directory for this file's tests, removed after them. */
  readonly dir: string;
  /** Stop the relay (its sockets close from the server side); `start` brings it back on the same storage. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

export interface FixtureOptions {
  bindings?: Record<string, string>;
  assets?: string;
  /** Keep the log on disk across stop/start. */
  persist?: boolean;
  /** Come back on the same port after a stop (default: a new one). */
  samePort?: boolean;
}

/**
 * One relay for the test file that calls it: started before its tests,
 * stopped after them with every replica the tests opened (replicas.ts) and
 * the scratch directory. The returned object always speaks for the relay
 * currently running, across stop/start.
 */
export function useRelay(opts: FixtureOptions = {}): RelayFixture {
  let relay: TestRelay | undefined;
  let dir = "";
  let port: number | undefined;
  let dbs = 0;
  /** Set synchronously by the first hook: node:test starts a file's top-level `before` hooks without waiting for the previous one. */
  let started: Promise<void> = Promise.resolve();
  const running = () => relay ?? assertNever("the relay is not running (stopped, or used outside a test)");
  const start = async () => {
    relay = await startRelay({
      ...(opts.bindings ? { bindings: opts.bindings } : {}),
      ...(opts.assets ? { assets: opts.assets } : {}),
      ...(opts.persist ? { persist: join(dir, "relay-storage") } : {}),
      ...(port === undefined ? {} : { port }),
    });
  };
  const stop = async () => {
    await relay?.close();
    relay = undefined;
  };
  before(() => {
    started = (async () => {
      dir = mkdtempSync(join(tmpdir(), "relay-test-"));
      if (opts.samePort) port = await freePort();
      await start();
    })();
    return started;
  });
  after(async () => {
    await closeReplicas();
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get url() {
      return running().url;
    },
    get mf() {
      return running().mf;
    },
    get dir() {
      return dir;
    },
    token: async (...args) => {
      await started;
      return running().token(...args);
    },
    close: stop,
    stop,
    start,
    db: (name) => `${name}-${++dbs}`,
  };
}

function assertNever(message: string): never {
  throw new Error(message);
}
