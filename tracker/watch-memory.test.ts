/**
 * A watch lets go of its snapshot once it is sent: a city's area watches hold a thousand vehicles
 * each in their snapshots, and a watch lasts for hours.
 */
import { expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { createLogger } from "../lib/log";
import type { LiveHub } from "./live-hub";
import { packPoint, viewOfRecord, type LiveView } from "./state-codec";
import { Watch } from "./watch";

const hub: LiveHub = { add() {}, remove() {}, deliver() {}, size: 0 };

test("watch memory - the snapshot's views and events are garbage once the watch is live", async () => {
  const refs: WeakRef<LiveView>[] = [];
  const controller = new AbortController();
  const watch = new Watch({
    hub,
    subjects: ["live.u33.u33db.u33dbc.*"],
    scope: { keepOffline: false, inView: () => true },
    visible: () => true,
    snapshot: async () => {
      const views: LiveView[] = [];
      for (let i = 0; i < 2000; i++) {
        const p = create(PositionSchema, {
          vehicleId: `car-${i}`,
          seq: 1,
          lat: 52.5 + i * 1e-5,
          lon: 13.4,
          recordedAt: timestampFromMs(Date.now()),
        });
        const view = viewOfRecord(p.vehicleId, packPoint(p, Date.now()));
        refs.push(new WeakRef(view));
        views.push(view);
      }
      return views;
    },
    minIntervalMs: 0,
    maxPending: 1000,
    maxLagMs: 60_000,
    signal: controller.signal,
    log: createLogger({ level: "error" }),
    chunk: 500,
  });
  const messages = watch.events((events) => ({ events }));
  let events = 0;
  for (;;) {
    const r = await messages.next();
    events += r.value!.events.length;
    if (events === 2001) break;
  }
  // The watch is now waiting for live events, as it would for hours.
  const waiting = messages.next();
  for (let i = 0; i < 5; i++) {
    Bun.gc(true);
    await Bun.sleep(1);
  }
  const alive = refs.filter((r) => r.deref() !== undefined).length;
  // A few may stay reachable from the conservatively scanned stack; before the fix all 2,000 did.
  expect(alive).toBeLessThan(100);
  controller.abort();
  await waiting.catch(() => {});
});
