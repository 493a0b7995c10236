/**
 * The resume rules on their own (the reconnect against real trackers is in live-client.test.ts):
 * what a reopened watch's snapshot may hand on, and what it must not.
 */
import { expect, test } from "bun:test";
import { VehicleStatus } from "../../gen/fleet/v1/position_pb";
import { ResumeFilter } from "./resume";
import type { LiveEvent, LiveVehicle } from "./types";

const v = (id: string, seq: number, more: Partial<LiveVehicle> = {}): LiveVehicle => ({
  id,
  fleetId: "f",
  orderId: "",
  status: VehicleStatus.ACTIVE,
  seq,
  lat: 52 + seq * 1e-4,
  lon: 13,
  speed: 1,
  heading: 0,
  accuracy: 5,
  recordedAtMs: 1_000 * seq,
  lastSeenMs: 1_000 * seq,
  online: true,
  ...more,
});
const snap = (vehicle: LiveVehicle): LiveEvent => ({ kind: "snapshot", vehicle, coalesced: 0 });
const move = (vehicle: LiveVehicle): LiveEvent => ({ kind: "move", vehicle, coalesced: 0 });
const end: LiveEvent = { kind: "snapshotEnd", resumed: false };

/** Opens a stream on `f` and passes `events`; returns what is handed on. */
function stream(f: ResumeFilter, events: LiveEvent[]): LiveEvent[] {
  f.restart();
  return events.flatMap((e) => f.pass(e));
}

test("resume - a restated snapshot is dropped, a newer seq goes on, an older one is a regression", () => {
  const f = new ResumeFilter();
  expect(stream(f, [snap(v("a", 1)), end, move(v("a", 2)), move(v("a", 3))])).toHaveLength(4);
  const resumed = stream(f, [snap(v("a", 3)), snap(v("a", 2)), end, move(v("a", 4))]);
  expect(resumed).toEqual([{ kind: "snapshotEnd", resumed: true }, move(v("a", 4))]);
  expect(f.stats).toEqual({ duplicates: 1, regressions: 1 });
});

test("resume - the same seq goes on when the status, the order or online changed", () => {
  const f = new ResumeFilter();
  stream(f, [snap(v("a", 5)), end]);
  const out = stream(f, [
    snap(v("a", 5, { status: VehicleStatus.ON_DELIVERY, orderId: "o-1" })),
    end,
    { kind: "offline", vehicle: v("a", 5, { status: VehicleStatus.ON_DELIVERY, orderId: "o-1", online: false }), coalesced: 0 },
  ]);
  expect(out.map((e) => e.kind)).toEqual(["snapshot", "snapshotEnd", "offline"]);
  // Offline restated after another reconnect: nothing new.
  expect(
    stream(f, [snap(v("a", 5, { status: VehicleStatus.ON_DELIVERY, orderId: "o-1", online: false })), end]).map((e) => e.kind),
  ).toEqual(["snapshotEnd"]);
});

test("resume - a vehicle missing from the resumed snapshot gets an exit; one that left and came back at the same seq re-enters", () => {
  const f = new ResumeFilter();
  stream(f, [snap(v("a", 1)), snap(v("b", 1)), end]);
  expect(stream(f, [snap(v("a", 1)), end])).toEqual([
    { kind: "exit", vehicleId: "b", vehicle: undefined },
    { kind: "snapshotEnd", resumed: true },
  ]);
  expect([...f.vehicles().keys()]).toEqual(["a"]);
  // An area watch: "a" leaves (a status filter) and comes back without moving.
  expect(f.pass({ kind: "exit", vehicleId: "a", vehicle: v("a", 1) })).toHaveLength(1);
  expect(f.pass({ kind: "exit", vehicleId: "a", vehicle: v("a", 1) })).toHaveLength(0);
  expect(f.pass({ kind: "enter", vehicle: v("a", 1), coalesced: 0 })).toHaveLength(1);
});
