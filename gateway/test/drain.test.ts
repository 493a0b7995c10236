/**
 * SIGTERM to a gateway process: in-flight points are published and acked, the stream ends OK, then
 * it exits 0; on the main port and on the vehicle port (GATEWAY_VEHICLE_PORT, lib/h2) alike.
 */
import { expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { SyncRequestSchema, type SyncResponse } from "../../gen/fleet/v1/ingest_pb";
import { mintVehicleToken } from "../../lib/auth";
import { freePort, startServiceProcess, testStack } from "../../dev";
import { bearer, type grpc, grpcClient, point, SECRET, storedPoints, uniqueName } from "./helpers";

/** Ten points on an open Sync, SIGTERM while they wait in their batch; every one acked and stored. */
async function drainCase(port: "main" | "vehicle"): Promise<void> {
  const stack = await testStack(["nats"]);
  const vehiclePort = port === "vehicle" ? await freePort() : undefined;
  const gw = await startServiceProcess({
    service: "gateway",
    env: {
      ...stack.env(),
      GATEWAY_PORT: "0",
      ...(vehiclePort === undefined ? {} : { GATEWAY_VEHICLE_PORT: String(vehiclePort) }),
      FLEET_JWT_SECRET: SECRET,
      LOG_LEVEL: "info",
      // Points wait in their batch long enough for SIGTERM to find them in flight.
      GATEWAY_BATCH_DELAY: "300ms",
      // The test NATS reserves each stream's max_bytes.
      FLEET_STREAM_MAX_BYTES: String(64 * 1024 * 1024),
    },
  });
  const keys = { secret: SECRET, issuer: "fleet", audience: "fleet" };
  const v = uniqueName(port === "vehicle" ? "vpdrain" : "drain");
  const client = grpcClient(vehiclePort === undefined ? gw.url.replace("http://", "") : `127.0.0.1:${vehiclePort}`);
  const acks: SyncResponse[] = [];
  const call = (client as unknown as { sync(md: grpc.Metadata): grpc.ClientDuplexStream<unknown, SyncResponse> }).sync(
    bearer(await mintVehicleToken(keys, v)),
  );
  const ended = new Promise<grpc.ServiceError | null>((resolve) => {
    call.on("data", (r: SyncResponse) => acks.push(r));
    call.on("error", (e: grpc.ServiceError) => resolve(e));
    call.on("end", () => resolve(null));
  });
  for (let seq = 1; seq <= 10; seq++) call.write(create(SyncRequestSchema, { position: point(v, seq) }));
  // SIGTERM once the gateway holds all ten (accepted, not yet published: the batch waits 300 ms);
  // a fixed sleep raced the client's sending.
  const accepted = async () =>
    Number(/gateway_points_accepted_total\{[^}]*\} (\d+)/.exec(await (await fetch(`${gw.adminUrl}/metrics`)).text())?.[1] ?? 0);
  let early: grpc.ServiceError | null | undefined;
  void ended.then((e) => (early = e));
  while ((await accepted()) < 10) {
    // A call that ended before SIGTERM fails here with its status, not by the test's timeout.
    if (early !== undefined) throw new Error(`the call ended before SIGTERM: ${early?.message ?? "OK"}`);
    await Bun.sleep(5);
  }
  const exitCode = gw.stop("SIGTERM", 15_000);
  expect(await ended).toBeNull();
  expect(acks.at(-1)!.ack!.durableSeq).toBe(10);
  expect(await exitCode).toBe(0);
  client.close();
  const stored = (await storedPoints(stack.natsUrl, "FLEET_POSITIONS")).filter((p) => p.vehicleId === v);
  expect(stored.map((p) => p.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
}

test("drain - SIGTERM acks in-flight points on an open stream, then exits 0", () => drainCase("main"), 60_000);

test("vehicle port drain - SIGTERM acks in-flight points on an open stream, then exits 0", () => drainCase("vehicle"), 60_000);
