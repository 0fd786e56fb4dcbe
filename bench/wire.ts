import dc from "node:diagnostics_channel";
import type { Socket } from "node:net";

/**
 * Bytes on the wire, counted at the TCP socket: every socket this process
 * opens (fetch's and the WebSocket's both go through `net.connect`, which
 * announces each new socket on the "net.client.socket" diagnostics channel)
 * is remembered, and `bytesRead`/`bytesWritten` are summed. That is the
 * payload TCP carried: HTTP headers, WebSocket framing and compressed bodies
 * included, exactly as they crossed the loopback interface (no TLS here;
 * TLS would add ~30 bytes per record). Counted in the client process, so no
 * proxy sits in the path and nothing else is measured.
 */
const sockets: Socket[] = [];
let installed = false;

export function installWireMeter(): void {
  if (installed) return;
  installed = true;
  dc.subscribe("net.client.socket", (m) => sockets.push((m as { socket: Socket }).socket));
}

export interface WireBytes {
  /** client → relay */
  up: number;
  /** relay → client */
  down: number;
}

export function wireBytes(): WireBytes {
  let up = 0;
  let down = 0;
  for (const s of sockets) {
    up += s.bytesWritten;
    down += s.bytesRead;
  }
  return { up, down };
}

export function wireSince(start: WireBytes): WireBytes {
  const now = wireBytes();
  return { up: now.up - start.up, down: now.down - start.down };
}
