/**
 * Interop with a gRPC client of another language and implementation: Python's grpcio, on gRPC's C
 * core (as Go, C++, Ruby and PHP vehicles would meet a server that frames HTTP/2 differently from
 * grpc-js). Its stubs are generated from proto/ here, by Debian's grpc_tools; the packages are
 * installed with apt-get when missing (scripts/ensure-system.sh python-grpc), as the servers are.
 * The client (test/python/interop_client.py) streams through the gateway and watches on the tracker.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startTestGateway, uniqueName, type TestGateway } from "../gateway/test/helpers";
import { mintWatchToken, tokenKeys } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { testStack } from "../dev";
import { pythonGrpc, type PythonGrpc } from "./python-grpc";
import { createTracker, type Tracker } from "../tracker/tracker";

let gw: TestGateway;
let tracker: Tracker;
let py: PythonGrpc;
type Line = { check: string; [k: string]: unknown };
let lines: Line[] = [];
const vehicle = uniqueName("py");

beforeAll(async () => {
  // Installs grpcio when missing and generates the stubs; the backlog cases below use it too.
  py = pythonGrpc();

  const stack = await testStack(["nats", "redis"]);
  gw = await startTestGateway();
  const config = loadConfig({
    FLEET_JWT_SECRET: gw.config.secret,
    TRACKER_PORT: "0",
    NATS_URL: stack.natsUrl,
    REDIS_URL: stack.redisUrl,
    LOG_LEVEL: "error",
  });
  tracker = await createTracker({ config, stream: gw.stream, subjects: `${gw.stream}.pos.>`, prefix: `${gw.stream}:` });

  const keys = tokenKeys(gw.config);
  // Asynchronous: the gateway and the tracker answer it from this process.
  lines = (await py.run("interop_client.py", [
    gw.target,
    tracker.url.replace(/^https?:\/\//, ""),
    vehicle,
    await gw.token(vehicle),
    await mintWatchToken(keys, { vehicles: [vehicle] }),
    await mintWatchToken(keys, { vehicles: ["somebody-else"] }),
  ])) as Line[];
}, 120_000);

afterAll(async () => {
  await tracker?.close();
  await gw?.gateway.close();
  py?.remove();
});

const line = (check: string): Line => {
  const l = lines.find((x) => x.check === check);
  if (!l) throw new Error(`the Python client printed no "${check}" line: ${JSON.stringify(lines)}`);
  return l;
};

test("python grpcio - Resume, Sync and Upload: durable seqs, and the NaN point refused with its reason", () => {
  expect(line("resume").durable).toBe(0);
  const acks = line("sync").acks as { durable: number; rejected: [number, string, string][] }[];
  expect(acks.at(-1)!.durable).toBe(3);
  const rejected = acks.flatMap((a) => a.rejected);
  expect(rejected).toHaveLength(1);
  expect(rejected[0]![0]).toBe(2);
  expect(rejected[0]![1]).toBe("REJECT_REASON_INVALID_COORDINATES");
  expect(rejected[0]![2]).toContain("NaN");
  expect(line("upload")).toMatchObject({ durable: 5, accepted: 2 });
});

test("python grpcio - a vehicle watch on the tracker gets the snapshot's end, then every stored point live", () => {
  const events = line("watch").events as { kind: string; seq: number }[];
  expect(events[0]!.kind).toBe("EVENT_KIND_SNAPSHOT_END");
  const live = events.slice(1);
  expect(live[0]!.kind).toBe("EVENT_KIND_ENTER");
  expect(live.slice(1).every((e) => e.kind === "EVENT_KIND_MOVE")).toBe(true);
  expect(live.at(-1)!.seq).toBe(5);
  expect(live.some((e) => e.seq === 2)).toBe(false); // the refused point never reached anyone
  expect(line("get-vehicle")).toMatchObject({ seq: 5, online: true });
});

test("python grpcio - bad input gets a gRPC status with a reason", () => {
  expect(line("bad-token")).toMatchObject({ code: "UNAUTHENTICATED" });
  expect(line("other-vehicle-point")).toMatchObject({ code: "PERMISSION_DENIED" });
  expect(String(line("other-vehicle-point").message)).toContain(vehicle);
  expect(line("too-large")).toMatchObject({ code: "RESOURCE_EXHAUSTED" });
  expect(String(line("too-large").message)).toContain(String(gw.config.maxMessageBytes));
  expect(line("malformed")).toMatchObject({ code: "INVALID_ARGUMENT" });
  expect(line("not-granted")).toMatchObject({ code: "PERMISSION_DENIED" });
  expect(line("inverted-box")).toMatchObject({ code: "INVALID_ARGUMENT" });
  expect(String(line("inverted-box").message)).toContain("inverted");
});

describe("python grpcio backlog", () => {
  // The flood check at its default (the test helper turns it off); ten refusals unsent at most.
  let bgw: TestGateway;
  const checks: Record<string, Record<string, unknown>> = {};
  const ids = ["100ms", "1s", "flood", "resend", "unread"].map((s) => `${uniqueName("pyb")}-${s}`);
  beforeAll(async () => {
    bgw = await startTestGateway({ GATEWAY_MAX_FIX_RATE: "", GATEWAY_MAX_UNSENT_REJECTIONS: "10" });
    const tokens = Object.fromEntries(await Promise.all(ids.map(async (id) => [id, await bgw.token(id)])));
    for (const l of await py.run("backlog_client.py", [bgw.target, JSON.stringify(tokens)])) checks[String(l.check)] = l;
  }, 120_000);
  afterAll(async () => {
    await bgw?.gateway.close();
  });
  const check = (name: string) => {
    const c = checks[name];
    if (!c) throw new Error(`backlog_client.py printed no "${name}" line: ${JSON.stringify(checks)}`);
    return c;
  };

  test("python grpcio - 1,000 points recorded 100 ms apart and 5,000 recorded 1 s apart each go through in one Upload", () => {
    expect(check("backlog-100ms")).toMatchObject({ durable: 1000, accepted: 1000, rejected: 0, trailer: "1000" });
    expect(check("backlog-1s")).toMatchObject({ durable: 5000, accepted: 5000, rejected: 0, trailer: "5000" });
  });

  test("python grpcio - a flood is refused RESOURCE_EXHAUSTED with a retry hint and the durable seq in the trailers", async () => {
    const f = check("flood");
    expect(f.code).toBe("RESOURCE_EXHAUSTED");
    expect(String(f.message)).toContain("fixes per second of its recorded time");
    expect(Number(f.retry_after_ms)).toBeGreaterThanOrEqual(1000);
    const durable = Number(f.durable);
    expect(durable).toBeGreaterThanOrEqual(100);
    expect((await bgw.stored()).filter((p) => p.vehicleId === ids[2])).toHaveLength(durable);
  });

  test("python grpcio - re-sending from seq 1 after a partial success goes through", () => {
    expect(check("resend")).toMatchObject({ first: 1800, durable: 3000, accepted: 1200, reasons: ["REJECT_REASON_DUPLICATE"] });
  });

  test("python grpcio - a Sync of 20,000 refused points read late: no ack holds more than GATEWAY_MAX_UNSENT_REJECTIONS refusals, every one arrives", () => {
    // grpcio's core reads ahead of the application, so the gateway is never held back here: what
    // this shows is that acks stay within the bound however many refusals wait.
    const s = check("sync-unread");
    expect(s).toMatchObject({ rejected: 20_000, durable: 20_001, code: "OK" });
    expect(s.largest_ack as number).toBeLessThanOrEqual(10);
  });
});
