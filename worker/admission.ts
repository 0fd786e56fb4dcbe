import { RelayError } from "../protocol/errors.ts";
import {
  CLIENT_UNITS_BURST,
  CLIENT_UNITS_PER_SECOND,
  DATABASE_UNITS_BURST,
  DATABASE_UNITS_PER_SECOND,
  MIN_RETRY_AFTER_MS,
  PUSH_UNITS,
  UNIT_BYTES,
} from "../protocol/limits.ts";

/**
 * Admission to one database's log object: token buckets per client and for
 * the database, in units of the object's time (protocol/limits.ts). A push
 * that its client's or the database's bucket cannot pay for now is refused
 * as `overloaded` with the wait until it could be, and that client's pushes
 * stay refused until then: a push already in flight behind a refused one
 * must not land first, or the refused entries' cseqs would fall below the
 * client's highest (the client resends everything from the refused push on).
 *
 * Refusing is cheap (no decode of the entries, no storage), so a client that
 * floods costs the object little and the others keep their latency. The
 * buckets live in the object's memory: an evicted object starts with full
 * buckets, which is at most one burst more.
 */
export class Admission {
  private readonly clients = new Map<string, Bucket>();
  private readonly database = new Bucket(DATABASE_UNITS_PER_SECOND, DATABASE_UNITS_BURST);

  /** Take the units of a push by `client`, or throw `overloaded` with the wait. */
  admit(client: string, entries: number, bytes: number, now = Date.now()): void {
    const units = Math.min(CLIENT_UNITS_BURST, PUSH_UNITS + entries + Math.ceil(bytes / UNIT_BYTES));
    const mine = this.bucket(client, now);
    const refill = Math.max(mine.wait(units, now), this.database.wait(units, now));
    const refused = mine.refusedFor(now);
    if (refill > 0 || refused > 0) {
      const retryAfterMs = Math.max(MIN_RETRY_AFTER_MS, refill, refused);
      // A retry before the wait is over is refused again, without lengthening the wait.
      if (refill > 0) mine.refuseUntil(now + retryAfterMs);
      throw new RelayError("overloaded", `client ${client} offers more than the database takes; retry in ${retryAfterMs} ms`, { retryAfterMs });
    }
    mine.take(units);
    this.database.take(units);
  }

  /** Refuse `client` for `ms` (a push it sent was refused by someone else: the queue, the runtime). */
  refuse(client: string, ms: number, now = Date.now()): void {
    this.bucket(client, now).refuseUntil(now + ms);
  }

  private bucket(client: string, now: number): Bucket {
    let b = this.clients.get(client);
    if (!b) {
      // Full buckets of idle clients carry no information: forget them before the map grows.
      if (this.clients.size >= MAX_TRACKED_CLIENTS) for (const [c, old] of this.clients) if (old.idle(now)) this.clients.delete(c);
      this.clients.set(client, (b = new Bucket(CLIENT_UNITS_PER_SECOND, CLIENT_UNITS_BURST, now)));
    }
    return b;
  }
}

const MAX_TRACKED_CLIENTS = 10_000;

class Bucket {
  private tokens: number;
  private at: number;
  private refusedUntil = 0;
  private readonly rate: number;
  private readonly burst: number;

  constructor(rate: number, burst: number, now = Date.now()) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.at = now;
  }

  /** Milliseconds until `units` can be taken (0: now). */
  wait(units: number, now: number): number {
    this.tokens = this.level(now);
    this.at = Math.max(this.at, now);
    return units <= this.tokens ? 0 : Math.ceil(((units - this.tokens) * 1000) / this.rate);
  }

  /** Milliseconds this client is still refused for (0: not refused). */
  refusedFor(now: number): number {
    return Math.max(0, this.refusedUntil - now);
  }

  take(units: number): void {
    this.tokens -= units;
  }

  refuseUntil(t: number): void {
    this.refusedUntil = Math.max(this.refusedUntil, t);
  }

  idle(now: number): boolean {
    return now >= this.refusedUntil && this.level(now) >= this.burst;
  }

  private level(now: number): number {
    return Math.min(this.burst, this.tokens + (Math.max(0, now - this.at) * this.rate) / 1000);
  }
}

/**
 * The front door's memory of the objects' refusals, per isolate: until the
 * wait it was given is over, a refused caller's pushes are answered
 * `overloaded` before their bodies are read, decoded or validated, so a
 * client that does not wait costs the relay almost nothing. Best effort:
 * another isolate does not know, and asks the object, which refuses too.
 */
export class FrontDoor {
  private readonly until = new Map<string, number>();

  check(db: string, sub: string, now = Date.now()): void {
    const key = `${db}\n${sub}`;
    const until = this.until.get(key);
    if (until === undefined) return;
    if (until <= now) {
      this.until.delete(key);
      return;
    }
    const retryAfterMs = Math.max(MIN_RETRY_AFTER_MS, until - now);
    throw new RelayError("overloaded", `${sub} was refused; retry in ${retryAfterMs} ms`, { retryAfterMs });
  }

  /** Remember a refusal the object answered (an `overloaded` error with its wait). */
  note(db: string, sub: string, e: unknown, now = Date.now()): void {
    if (!(e instanceof RelayError) || e.code !== "overloaded" || e.retryAfterMs === undefined) return;
    if (this.until.size >= MAX_TRACKED_CLIENTS) for (const [k, t] of this.until) if (t <= now) this.until.delete(k);
    if (this.until.size < MAX_TRACKED_CLIENTS) this.until.set(`${db}\n${sub}`, now + e.retryAfterMs);
  }
}
