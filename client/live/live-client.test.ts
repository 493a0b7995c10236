/**
 * The live client against the real platform: a gateway and two trackers as processes on the test
 * stack, points sent by the vehicle client library. Watches over Connect on fetch (what a browser
 * uses) and over connect-node's gRPC transport.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLiveClient, LiveError, trackOrder, trackVehicle, VehicleStatus, type LiveEvent } from ".";
import { startLiveServices, until, type LiveServices } from "./test/services";

let svc: LiveServices;
beforeAll(async () => {
  // Heartbeats every 500 ms, so that an idle timeout can be short and a test of it seconds long.
  svc = await startLiveServices({ trackers: 2, history: true, env: { TRACKER_WATCH_HEARTBEAT: "500ms" } });
}, 60_000);
afterAll(async () => {
  await svc?.stop();
});

/** The seq of every vehicle state an event handed on, per vehicle, in order. */
function seqsOf(events: LiveEvent[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const e of events) {
    if (e.kind === "exit" || e.kind === "snapshotEnd") continue;
    const list = out.get(e.vehicle.id) ?? [];
    list.push(e.vehicle.seq);
    out.set(e.vehicle.id, list);
  }
  return out;
}

test("live client - watchVehicle over Connect (fetch): the snapshot, live, then the next point", async () => {
  const truck = await svc.vehicle(svc.unique("truck"), "north");
  await truck.send({ lat: 52.5, lon: 13.4 });
  const client = createLiveClient({ baseUrl: svc.trackers[0]!.url, token: await svc.watchToken({ vehicles: [truck.id] }) });
  const events: LiveEvent[] = [];
  const states: string[] = [];
  const watch = client.watchVehicle(truck.id, { onEvent: (e) => events.push(e), onConnection: (s) => states.push(s) });
  try {
    await until(() => watch.state === "live", "the watch to go live");
    expect(events[0]).toMatchObject({
      kind: "snapshot",
      vehicle: { id: truck.id, seq: 1, lat: 52.5, lon: 13.4, fleetId: "north", online: true },
    });
    expect(events[1]).toEqual({ kind: "snapshotEnd", resumed: false });
    const seq = await truck.send({ lat: 52.5001, lon: 13.4001 });
    await until(() => events.some((e) => e.kind === "move" && e.vehicle.seq === seq), `the move of seq ${seq}`);
    expect(watch.vehicles().get(truck.id)).toMatchObject({ seq, lat: 52.5001, lon: 13.4001 });
    expect(states).toEqual(["live"]);
  } finally {
    watch.close();
  }
  expect(await watch.done).toBeUndefined();
  expect(watch.state).toBe("closed");
});

test("live client - a token for another vehicle is refused with a typed error, not retried", async () => {
  const mine = svc.unique("mine");
  const other = await svc.vehicle(svc.unique("other"));
  await other.send({ lat: 52.51, lon: 13.41 });
  const client = createLiveClient({ baseUrl: svc.trackers[0]!.url, token: await svc.watchToken({ vehicles: [mine] }) });
  const errors: LiveError[] = [];
  const watch = client.watchVehicle(other.id, { onError: (e) => errors.push(e) });
  const err = await watch.done;
  expect(err).toBeInstanceOf(LiveError);
  expect(err!.code).toBe("permission-denied");
  expect(err!.retryable).toBe(false);
  expect(err!.message).toContain("the token does not grant this");
  expect(err!.message).toContain(other.id);
  expect(errors).toEqual([err!]);
  expect(watch.state).toBe("closed");
  expect(watch.stats.reconnects).toBe(0);
  // The same for a query, and an expired token says so.
  const refused = await client.getVehicle(other.id).catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(LiveError);
  expect((refused as LiveError).code).toBe("permission-denied");
  const expired = createLiveClient({
    baseUrl: svc.trackers[0]!.url,
    token: await svc.watchToken({ vehicles: [other.id], ttlSeconds: -60 }),
  });
  const late = await expired.watchVehicle(other.id, { onError: () => {} }).done;
  expect(late?.code).toBe("token-expired");
  expect(late?.message).toContain("get a new one");
  // With getToken, a refused token is met once with a fresh one before it is an error.
  const tokens = [await svc.watchToken({ vehicles: [other.id], ttlSeconds: -60 }), await svc.watchToken({ vehicles: [other.id] })];
  let asked = 0;
  const refreshing = createLiveClient({ baseUrl: svc.trackers[0]!.url, getToken: () => tokens[Math.min(asked++, 1)]! });
  const renewed = refreshing.watchVehicle(other.id, { onError: () => {} });
  await until(() => renewed.state === "live" || renewed.state === "closed", "the watch to go live on the fresh token");
  expect(renewed.state).toBe("live");
  renewed.close();
  asked = 0;
  expect((await refreshing.getVehicle(other.id)).id).toBe(other.id);
  expect(asked).toBe(2);
});

test("live client - SIGKILL of the tracker under a watch (gRPC): resumed on the other with a snapshot, no duplicate, no regression, the newest point arrives", async () => {
  const vehicles = await Promise.all([svc.vehicle(svc.unique("kill-a")), svc.vehicle(svc.unique("kill-b"))]);
  for (const v of vehicles) await v.send({ lat: 52.52, lon: 13.405 });
  const urls = svc.trackers.map((t) => t.url);
  const client = createLiveClient({
    baseUrl: urls,
    transport: urls.map((baseUrl) => createGrpcTransport({ baseUrl })),
    token: await svc.watchToken({ vehicles: vehicles.map((v) => v.id) }),
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const events: LiveEvent[] = [];
  const states: string[] = [];
  const watch = client.watchVehicle(
    vehicles.map((v) => v.id),
    { onEvent: (e) => events.push(e), onConnection: (s) => states.push(s) },
  );
  // The first vehicle's points keep coming while the tracker dies and the watch moves; the second
  // stands still, so the resumed snapshot restates the very state the app already has.
  let sending = true;
  let step = 0;
  const sender = (async () => {
    while (sending) {
      step++;
      await vehicles[0]!.send({ lat: 52.52 + step * 1e-5, lon: 13.405 + step * 1e-5 });
      await Bun.sleep(30);
    }
  })();
  try {
    await until(() => watch.state === "live" && events.some((e) => e.kind === "move"), "the watch to be live and moving");
    const dead = watch.tracker;
    await svc.trackers[dead]!.stop("SIGKILL");
    await until(() => watch.stats.snapshots >= 2 && watch.state === "live", "the watch to resume with a snapshot");
    expect(watch.tracker).toBe(1 - dead);
    await Bun.sleep(300);
    sending = false;
    await sender;
    const newest = vehicles.map((v) => v.client.stats.durableSeq);
    await until(
      () => vehicles.every((v, i) => (watch.vehicles().get(v.id)?.seq ?? 0) >= newest[i]!),
      "each vehicle's newest acked point on the resumed watch",
    );
    expect(states).toEqual(["live", "reconnecting", "live"]);
    expect(events.filter((e) => e.kind === "snapshotEnd")).toEqual([
      { kind: "snapshotEnd", resumed: false },
      { kind: "snapshotEnd", resumed: true },
    ]);
    // Handed on: each vehicle's seqs strictly increase (no duplicate, no step back) and end at the newest.
    const seqs = seqsOf(events);
    for (const [i, v] of vehicles.entries()) {
      const list = seqs.get(v.id)!;
      for (let k = 1; k < list.length; k++) expect(list[k]!).toBeGreaterThan(list[k - 1]!);
      expect(list.at(-1)).toBe(newest[i]!);
    }
    expect(watch.stats.regressions).toBe(0);
    expect(watch.stats.duplicates).toBeGreaterThan(0);
  } finally {
    sending = false;
    await sender;
    watch.close();
    // The next test wants two trackers again.
    if (svc.trackers.some((t) => t.child.exitCode !== null || t.child.signalCode !== null)) {
      const alive = svc.trackers.filter((t) => t.child.exitCode === null && t.child.signalCode === null);
      svc.trackers.length = 0;
      svc.trackers.push(...alive);
      svc.trackers.push(await svc.startTracker());
    }
  }
}, 30_000);

test("live client - trackVehicle: latest state, trail, online then offline as the tracker sweeps it", async () => {
  const van = await svc.vehicle(svc.unique("van"));
  await van.send({ lat: 52.53, lon: 13.42 });
  const client = createLiveClient({ baseUrl: svc.trackers.map((t) => t.url), token: await svc.watchToken({ vehicles: [van.id] }) });
  const tracking = trackVehicle(client, van.id, { trailLength: 3 });
  const seen: boolean[] = [];
  const unsubscribe = tracking.subscribe((s) => seen.push(s.online));
  try {
    await until(() => tracking.getState().connection === "live", "live");
    for (let k = 1; k <= 3; k++) await van.send({ lat: 52.53 + k * 1e-4, lon: 13.42 });
    await until(() => tracking.getState().vehicle?.seq === 4, "seq 4");
    const s = tracking.getState();
    expect(s.online).toBe(true);
    expect(s.error).toBeUndefined();
    // Oldest first, at most trailLength; a point the tracker coalesced into a later one is not in it.
    const lats = s.trail.map((p) => p.lat);
    expect(lats.length).toBeLessThanOrEqual(3);
    expect(lats.at(-1)).toBe(52.5303);
    expect(lats).toEqual([...lats].sort((a, b) => a - b));
    // TRACKER_STALE_AFTER is 2 s here.
    await until(() => tracking.getState().online === false, "OFFLINE", 8_000);
    expect(tracking.getState().vehicle?.seq).toBe(4);
    expect(seen.at(-1)).toBe(false);
  } finally {
    unsubscribe();
    tracking.close();
  }
}, 15_000);

test("live client - queries: getVehicle, nearby, setStatus with a dispatcher's token, and history's track and replay", async () => {
  const fleet = svc.unique("fleet");
  const cab = await svc.vehicle(svc.unique("cab"), fleet);
  const start = Date.now();
  for (let k = 0; k < 4; k++) await cab.send({ lat: 52.54 + k * 1e-4, lon: 13.43 });
  const client = createLiveClient({
    baseUrl: svc.trackers.map((t) => t.url),
    historyUrl: svc.history!.url,
    token: await svc.watchToken({ fleets: [fleet], dispatch: true }),
  });
  expect(await client.getVehicle(cab.id)).toMatchObject({ id: cab.id, seq: 4, fleetId: fleet });
  const near = await client.nearby({ circle: { lat: 52.54, lon: 13.43, radiusM: 500 } });
  expect(near.map((n) => n.vehicle.id)).toEqual([cab.id]);
  const set = await client.setStatus(cab.id, VehicleStatus.ON_DELIVERY, { orderId: "o-1" });
  expect(set).toMatchObject({ status: VehicleStatus.ON_DELIVERY, orderId: "o-1" });
  expect((await client.countByStatus({ fleetId: fleet })).get(VehicleStatus.ON_DELIVERY)).toBe(1);
  // History writes in batches: the track is complete once all four are there.
  let track = await client.track(cab.id, { from: start - 60_000, to: Date.now() + 60_000 });
  await until(async () => {
    track = await client.track(cab.id, { from: start - 60_000, to: Date.now() + 60_000 });
    return track.totalPoints === 4;
  }, "history to hold the four points");
  expect(track.points.map((p) => p.seq)).toEqual([1, 2, 3, 4]);
  const replayed: number[] = [];
  for await (const batch of client.replay({ vehicleId: cab.id }, { from: start - 60_000, to: Date.now() + 60_000, speed: 1000 }))
    replayed.push(...batch.map((p) => p.seq));
  expect(replayed).toEqual([1, 2, 3, 4]);
  // An aborted call says so.
  const abort = new AbortController();
  abort.abort();
  expect(((await client.getVehicle(cab.id, { signal: abort.signal }).catch((e: unknown) => e)) as LiveError).code).toBe("aborted");
}, 20_000);

/**
 * A TCP proxy to `target` that cuts every connection `cutAfterMs` after the server's first bytes
 * back: a network that breaks a long stream mid-way (a real socket closed, not a fake server).
 */
async function cuttingProxy(target: URL, cutAfterMs: number) {
  let cuts = 0;
  const server = Bun.listen<{ upstream?: Promise<import("bun").Socket<undefined>>; timer?: Timer }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(client) {
        client.data = {};
        client.data.upstream = Bun.connect({
          hostname: target.hostname,
          port: Number(target.port),
          socket: {
            data(_up, bytes) {
              client.write(bytes);
              client.data.timer ??= setTimeout(() => {
                cuts++;
                client.end();
                _up.end();
              }, cutAfterMs);
            },
            close() {
              client.end();
            },
          },
        });
      },
      async data(client, bytes) {
        (await client.data.upstream)!.write(bytes);
      },
      async close(client) {
        clearTimeout(client.data.timer);
        (await client.data.upstream)?.end();
      },
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    get cuts() {
      return cuts;
    },
    stop: () => server.stop(true),
  };
}

test("live client - a replay cut off mid-way resumes on the next history server from its last point: each point once, in order", async () => {
  const cab = await svc.vehicle(svc.unique("replayed"));
  const start = Date.now();
  const sent = 12;
  for (let k = 0; k < sent; k++) {
    await cab.send({ lat: 52.54 + k * 1e-4, lon: 13.43 });
    await Bun.sleep(60);
  }
  const recorded = Date.now() - start;
  const client = createLiveClient({
    baseUrl: svc.trackers[0]!.url,
    historyUrl: [svc.history!.url],
    token: await svc.watchToken({ vehicles: [cab.id] }),
  });
  await until(
    async () => (await client.track(cab.id, { from: start - 1000, to: Date.now() + 1000 })).totalPoints === sent,
    "history to hold the points",
  );
  // At half speed the replay takes ~2 × what the points took to send; the proxy cuts it after a third of that.
  const proxy = await cuttingProxy(new URL(svc.history!.url), (2 * recorded) / 3);
  try {
    const resuming = createLiveClient({
      baseUrl: svc.trackers[0]!.url,
      historyUrl: [proxy.url, svc.history!.url],
      token: await svc.watchToken({ vehicles: [cab.id] }),
    });
    const replayed: number[] = [];
    let beforeCut = 0;
    for await (const batch of resuming.replay({ vehicleId: cab.id }, { from: start - 1000, to: Date.now() + 1000, speed: 0.5 })) {
      if (proxy.cuts === 0) beforeCut += batch.length;
      replayed.push(...batch.map((p) => p.seq));
    }
    expect(proxy.cuts).toBe(1);
    expect(beforeCut).toBeGreaterThan(0);
    expect(beforeCut).toBeLessThan(sent);
    expect(replayed).toEqual(Array.from({ length: sent }, (_, i) => i + 1));
  } finally {
    proxy.stop();
  }
}, 30_000);

test("live client - watchArea read as an async iterator: enter, move, exit when the vehicle leaves the box; leaving the loop closes it", async () => {
  const fleet = svc.unique("area");
  const bus = await svc.vehicle(svc.unique("bus"), fleet);
  const client = createLiveClient({ baseUrl: svc.trackers[0]!.url, token: await svc.watchToken({ fleets: [fleet] }) });
  const abort = new AbortController();
  const watch = client.watchArea({ box: { minLat: 52.6, minLon: 13.6, maxLat: 52.61, maxLon: 13.61 } }, { signal: abort.signal });
  const kinds: string[] = [];
  const timer = setTimeout(() => abort.abort(), 10_000);
  for await (const e of watch) {
    kinds.push(e.kind);
    if (e.kind === "snapshotEnd") {
      await bus.send({ lat: 52.605, lon: 13.605 });
      await bus.send({ lat: 52.606, lon: 13.605 });
      await bus.send({ lat: 52.7, lon: 13.605 });
    }
    if (e.kind === "exit") break;
  }
  clearTimeout(timer);
  // The second point may be coalesced into the third (then the exit carries it): enter, maybe move, exit.
  expect(kinds[0]).toBe("snapshotEnd");
  expect(kinds[1]).toBe("enter");
  expect(kinds.at(-1)).toBe("exit");
  expect(await watch.done).toBeUndefined();
  expect(watch.state).toBe("closed");
});

test("live client - idleTimeoutMs: a still vehicle's watch stays put on the tracker's heartbeats; a tracker gone silent (SIGSTOP) is left for the other", async () => {
  const bike = await svc.vehicle(svc.unique("bike"));
  await bike.send({ lat: 52.55, lon: 13.44 });
  const urls = svc.trackers.map((t) => t.url);
  const client = createLiveClient({ baseUrl: urls, token: await svc.watchToken({ vehicles: [bike.id] }), backoff: { initialMs: 50 } });
  const watch = client.watchVehicle(bike.id, { idleTimeoutMs: 1_500, onConnection: () => {} });
  const paused = () => svc.trackers[watch.tracker]!;
  let stopped: number | undefined;
  try {
    await until(() => watch.state === "live", "live");
    // The bike stands still: only heartbeats come, and they keep the watch where it is.
    await Bun.sleep(3_000);
    expect(watch.stats.snapshots).toBe(1);
    expect(watch.state).toBe("live");
    stopped = paused().pid;
    process.kill(stopped, "SIGSTOP");
    const from = watch.tracker;
    await until(() => watch.stats.snapshots >= 2 && watch.state === "live", "the watch to resume on the other tracker", 10_000);
    expect(watch.tracker).toBe(1 - from);
  } finally {
    if (stopped) process.kill(stopped, "SIGCONT");
    watch.close();
  }
}, 20_000);

test("live client - trackOrder follows the order to the vehicle that takes it over, with a new trail", async () => {
  const fleet = svc.unique("shop");
  const [first, second] = await Promise.all([svc.vehicle(svc.unique("first"), fleet), svc.vehicle(svc.unique("second"), fleet)]);
  await first.send({ lat: 52.56, lon: 13.45, orderId: "o-9" });
  const client = createLiveClient({ baseUrl: svc.trackers[0]!.url, token: await svc.watchToken({ orders: [`${fleet}/o-9`] }) });
  const tracking = trackOrder(client, `${fleet}/o-9`);
  try {
    await until(() => tracking.getState().connection === "live", "live");
    await first.send({ lat: 52.5601, lon: 13.45, orderId: "o-9" });
    await until(
      () => tracking.getState().vehicle?.id === first.id && tracking.getState().trail.length === 2,
      "the first vehicle and its trail",
    );
    // The order moves to the second vehicle; the first goes on without it.
    await second.send({ lat: 52.57, lon: 13.46, orderId: "o-9" });
    await first.send({ lat: 52.5602, lon: 13.45 });
    await until(() => tracking.getState().vehicle?.id === second.id, "the second vehicle");
    expect(tracking.getState().trail).toEqual([{ lat: 52.57, lon: 13.46, recordedAtMs: tracking.getState().vehicle!.recordedAtMs }]);
    await Bun.sleep(200);
    expect(tracking.getState().vehicle?.id).toBe(second.id);
  } finally {
    tracking.close();
  }
}, 20_000);

test("live client - a handler that throws does not break the watch; a watch closed before it was read is closed", async () => {
  const car = await svc.vehicle(svc.unique("car"));
  await car.send({ lat: 52.58, lon: 13.47 });
  const client = createLiveClient({ baseUrl: svc.trackers[0]!.url, token: await svc.watchToken({ vehicles: [car.id] }) });
  const logged: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => logged.push(args.map(String).join(" "));
  let calls = 0;
  const watch = client.watchVehicle(car.id, {
    onState: () => {
      calls++;
      throw new Error("a bug in the app's handler");
    },
  });
  try {
    await until(() => watch.state === "live" && calls === 1, "live");
    await car.send({ lat: 52.5801, lon: 13.47 });
    await until(() => calls === 2, "the next state despite the throw");
    expect(watch.stats.reconnects).toBe(0);
    expect(logged[0]).toContain("a handler threw; the watch goes on: Error: a bug in the app's handler");
  } finally {
    watch.close();
    console.error = consoleError;
  }
  const unread = client.watchVehicle(car.id);
  unread.close();
  expect(await unread.done).toBeUndefined();
  expect(unread.state).toBe("closed");
});
