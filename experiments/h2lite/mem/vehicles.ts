/**
 * Child of gateway-probe.ts: `count` vehicles, each its own TCP connection (from `localAddress`) and
 * token, each one Sync stream on the gateway's vehicle port that sends one point and waits for its
 * ack; then, with `everyS` > 0, a point per vehicle every `everyS` seconds (as `bench platform`'s
 * vehicles, every 6 s). Frames by hand over node:net (test/raw-h2.ts's HPACK literals): the client
 * must stay small beside the gateway it measures. Prints `ready <acked> <failed>` once every
 * vehicle's first point was acked (or failed), then `sent <points>` every 10 s.
 *
 * Args: port first count localAddress everyS, the token keys as JSON in PROBE_KEYS.
 */
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { SyncRequestSchema } from "../../../gen/fleet/v1/ingest_pb";
import { mintVehicleToken, type TokenKeys } from "../../../lib/auth";
import { encodeHeaders, FLAG, FRAME, frame } from "../../../test/raw-h2";

const [port, first, count] = process.argv.slice(2, 5).map(Number) as [number, number, number];
const localAddress = process.argv[5] ?? "127.0.0.1";
const everyS = Number(process.argv[6] ?? 0);
const keys = JSON.parse(process.env.PROBE_KEYS!) as TokenKeys;
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const SETTINGS_ACK = frame(FRAME.SETTINGS, FLAG.ACK, 0);

class Vehicle {
  seq = 0;
  /** gRPC messages received on stream 1 (the resume ack, then one ack per point). */
  acks = 0;
  ended = false;
  private buf: Buffer | null = null;

  constructor(
    readonly id: string,
    readonly socket: net.Socket,
    private readonly onChange: () => void,
  ) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => {});
    socket.on("close", () => {
      this.ended = true;
      this.onChange();
    });
  }

  point(): Buffer {
    this.seq++;
    const body = toBinary(
      SyncRequestSchema,
      create(SyncRequestSchema, {
        position: { vehicleId: this.id, seq: this.seq, recordedAt: timestampFromMs(Date.now()), lat: 52.52, lon: 13.405, speed: 10 },
      }),
    );
    const msg = Buffer.allocUnsafe(5 + body.length);
    msg[0] = 0;
    msg.writeUInt32BE(body.length, 1);
    msg.set(body, 5);
    return frame(FRAME.DATA, 0, 1, msg);
  }

  private onData(chunk: Buffer): void {
    let buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const type = buf[3]!;
      const flags = buf[4]!;
      const payload = buf.subarray(9, 9 + len);
      if (type === FRAME.SETTINGS && !(flags & FLAG.ACK)) this.socket.write(SETTINGS_ACK);
      else if (type === FRAME.PING && !(flags & FLAG.ACK)) this.socket.write(frame(FRAME.PING, FLAG.ACK, 0, payload));
      else if (type === FRAME.DATA) {
        for (let o = 0; o + 5 <= payload.length; o += 5 + payload.readUInt32BE(o + 1)) this.acks++;
        this.onChange();
      } else if ((type === FRAME.HEADERS && flags & FLAG.END_STREAM) || type === FRAME.RST_STREAM || type === FRAME.GOAWAY) {
        this.ended = true;
        this.onChange();
      }
      buf = buf.subarray(9 + len);
    }
    this.buf = buf.length > 0 ? Buffer.from(buf) : null;
  }
}

const vehicles: Vehicle[] = [];
let failed = 0;
const open = async (i: number): Promise<void> => {
  const id = `probe-${i}`;
  const token = await mintVehicleToken(keys, id, { fleetId: "probe" });
  const socket = net.connect({ port, host: "127.0.0.1", localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.setNoDelay(true);
  let wake: (() => void) | undefined;
  const v = new Vehicle(id, socket, () => wake?.());
  const headers = encodeHeaders([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", "/fleet.v1.IngestService/Sync"],
    [":authority", `127.0.0.1:${port}`],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ["authorization", `Bearer ${token}`],
  ]);
  socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headers), v.point()]));
  const until = Date.now() + 30_000;
  while (v.acks < 2 && !v.ended && Date.now() < until) {
    await new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, 1000);
    });
  }
  wake = undefined;
  if (v.acks >= 2 && !v.ended) vehicles.push(v);
  else {
    failed++;
    socket.destroy();
  }
};

// 200 opening at once, as bench platform's vehicles.
let next = first;
await Promise.all(
  Array.from({ length: 200 }, async () => {
    while (next < first + count) {
      const i = next++;
      await open(i).catch(() => failed++);
    }
  }),
);
console.log(`ready ${vehicles.length} ${failed}`);

if (everyS > 0) {
  // One timer for all: each tick sends the share of vehicles due, so each sends once per everyS.
  const TICK_MS = 100;
  const perTick = Math.max(1, Math.ceil((vehicles.length * TICK_MS) / (everyS * 1000)));
  let at = 0;
  let sent = 0;
  setInterval(() => {
    for (let k = 0; k < perTick && vehicles.length > 0; k++) {
      const v = vehicles[at]!;
      at = (at + 1) % vehicles.length;
      if (!v.ended) {
        v.socket.write(v.point());
        sent++;
      }
    }
  }, TICK_MS);
  setInterval(() => console.log(`sent ${sent} ended ${vehicles.filter((v) => v.ended).length}`), 10_000);
}
await new Promise(() => {});
