import { RelayError } from "../../client/errors.ts";
import type { PullResponse, PushEntry, PushResponse } from "../../protocol/messages.ts";
import { httpTransport, type Transport } from "../../client/transport/http.ts";
import type { SchemaVersion } from "../../protocol/schema.ts";

/**
 * A transport with faults a test arms one at a time, so every failure is
 * reproducible without sleeps or timing:
 * - offline: every call fails with RelayError("network") before reaching the relay;
 * - lost push responses: the relay stores the push, the client hears a network error;
 * - duplicated pushes: the same request reaches the relay twice;
 * - a held response: the call completes at the relay, then waits at a gate
 *   the test opens later (a slow network, with local work in between).
 * It reaches the relay at `base.url` as it is at each call, so a relay that
 * restarts on a new port is found again.
 */
export interface RelayAddress {
  url: string;
}

export class Gate {
  /** Resolves once a call is waiting at the gate. */
  readonly arrived: Promise<void>;
  private arrive!: () => void;
  private release!: () => void;
  private readonly opened: Promise<void>;
  constructor() {
    this.arrived = new Promise((r) => (this.arrive = r));
    this.opened = new Promise((r) => (this.release = r));
  }
  /** Called by the transport: wait here until the test opens the gate. */
  wait(): Promise<void> {
    this.arrive();
    return this.opened;
  }
  open(): void {
    this.release();
  }
}

export class FaultyTransport implements Transport {
  offline = false;
  /** The next n pushes reach the relay, and their responses are lost. */
  lostPushResponses = 0;
  /** The next n pushes are sent twice; the second response is returned. */
  duplicatedPushes = 0;
  /** The next push or pull response waits at this gate. */
  hold: { call: "push" | "pull"; gate: Gate } | undefined;
  /** Ask for pull pages of at most this many entries (default: the relay's), so one sync spans several pages. */
  pullLimit: number | undefined;
  /** Calls that reached the relay (for tests that check a fault was injected). */
  calls = { push: 0, pull: 0 };

  private readonly base: RelayAddress;
  private readonly db: string;
  private readonly token: string;
  private real: { url: string; transport: Transport } | undefined;

  constructor(base: RelayAddress, db: string, token: string) {
    this.base = base;
    this.db = db;
    this.token = token;
  }

  /** Disarm every fault (an armed gate is opened). */
  heal(): void {
    this.offline = false;
    this.lostPushResponses = 0;
    this.duplicatedPushes = 0;
    this.hold?.gate.open();
    this.hold = undefined;
  }

  private transport(): Transport {
    if (this.real?.url !== this.base.url) {
      this.real = { url: this.base.url, transport: httpTransport({ url: this.base.url, db: this.db, token: this.token }) };
    }
    return this.real.transport;
  }

  private async held(call: "push" | "pull"): Promise<void> {
    const h = this.hold;
    if (h?.call !== call) return;
    this.hold = undefined;
    await h.gate.wait();
  }

  async push(client: string, entries: PushEntry[], signal?: AbortSignal, schema?: SchemaVersion[]): Promise<PushResponse> {
    if (this.offline) throw new RelayError("network", "offline (injected)");
    this.calls.push++;
    let res = await this.transport().push(client, entries, signal, schema);
    if (this.duplicatedPushes > 0) {
      this.duplicatedPushes--;
      res = await this.transport().push(client, entries, signal, schema);
    }
    await this.held("push");
    if (this.lostPushResponses > 0) {
      this.lostPushResponses--;
      throw new RelayError("network", "push response lost (injected)");
    }
    return res;
  }

  async pull(after: number, limit?: number, signal?: AbortSignal): Promise<PullResponse> {
    if (this.offline) throw new RelayError("network", "offline (injected)");
    this.calls.pull++;
    const res = await this.transport().pull(after, this.pullLimit ?? limit, signal);
    await this.held("pull");
    return res;
  }
}
