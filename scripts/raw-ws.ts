import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";

/**
 * A WebSocket client over a bare TCP socket, for the load suite's stalled
 * subscribers: unlike fetch's WebSocket it can stop reading (pause the TCP
 * socket, so the kernel's buffers fill and the relay's sends back up) and
 * resume later. Binary and text messages, client frames masked (RFC 6455).
 */
export class RawWebSocket {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly socket: Socket;
  onmessage: (data: Buffer | string) => void = () => undefined;
  onclose: (code: number) => void = () => undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
  }

  static open(url: string): Promise<RawWebSocket> {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(u.port), u.hostname);
      const key = randomBytes(16).toString("base64");
      socket.once("error", reject);
      socket.once("connect", () =>
        socket.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`),
      );
      let head = Buffer.alloc(0);
      const onHandshake = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        socket.off("data", onHandshake);
        const status = head.subarray(0, end).toString("latin1");
        if (!status.startsWith("HTTP/1.1 101")) return reject(new Error(`upgrade refused: ${status.split("\r\n")[0]}`));
        const ws = new RawWebSocket(socket);
        socket.on("data", (c: Buffer) => ws.received(c));
        socket.on("close", () => ws.onclose(1006));
        ws.received(head.subarray(end + 4));
        resolve(ws);
      };
      socket.on("data", onHandshake);
    });
  }

  /** Stop reading: nothing more is taken from the kernel until resume(). */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  send(data: Uint8Array | string): void {
    const payload = typeof data === "string" ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const len = payload.byteLength;
    const header = len < 126 ? Buffer.from([0, 0x80 | len]) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    header[0] = 0x80 | (typeof data === "string" ? 0x1 : 0x2);
    if (len >= 126 && len < 65536) (header[1] = 0x80 | 126, header.writeUInt16BE(len, 2));
    else if (len >= 65536) (header[1] = 0x80 | 127, header.writeBigUInt64BE(BigInt(len), 2));
    const mask = randomBytes(4);
    const masked = Buffer.alloc(len);
    for (let i = 0; i < len; i++) masked[i] = payload[i]! ^ mask[i & 3]!;
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  close(): void {
    this.socket.destroy();
  }

  private received(chunk: Buffer): void {
    this.buffered = this.buffered.byteLength === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    for (;;) {
      const b = this.buffered;
      if (b.byteLength < 2) return;
      const opcode = b[0]! & 0x0f;
      let len = b[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.byteLength < 4) return;
        len = b.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (b.byteLength < 10) return;
        len = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      if (b.byteLength < at + len) return;
      const payload = b.subarray(at, at + len);
      this.buffered = b.subarray(at + len);
      // Fragmented messages are not used by the relay (each frame is one message).
      if (opcode === 0x2) this.onmessage(payload);
      else if (opcode === 0x1) this.onmessage(payload.toString("utf8"));
      else if (opcode === 0x8) this.onclose(len >= 2 ? payload.readUInt16BE(0) : 1005);
    }
  }
}
