import { decode } from "../../protocol/codec.ts";
import type { TestRelay } from "./relay.ts";

/** Polls `pred` every 5 ms until it holds; fails naming `what` after `ms`. */
export async function until(pred: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A raw protocol socket for `sub` with a write token, recording every decoded frame it receives. */
export async function openSocket(relay: TestRelay, db: string, sub: string): Promise<{ ws: WebSocket; frames: any[] }> {
  const ws = new WebSocket(`${relay.url.replace("http", "ws")}/v1/db/${db}/ws?token=${await relay.token("write", sub, db)}`);
  ws.binaryType = "arraybuffer";
  const frames: any[] = [];
  ws.onmessage = (ev) => frames.push(typeof ev.data === "string" ? ev.data : decode(new Uint8Array(ev.data as ArrayBuffer)));
  await new Promise((res, rej) => ((ws.onopen = res), (ws.onerror = rej)));
  return { ws, frames };
}
