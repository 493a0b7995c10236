/**
 * What makes a watch that reconnects look like one unbroken watch: per vehicle, the newest state
 * already handed on. A reopened watch starts with a snapshot that restates every vehicle; only what
 * is newer than what the app already has goes on, so there is no duplicate and nothing goes back.
 *
 * "Newer" is by the vehicle's seq (it only grows; recorded time when a seq is missing). The same
 * seq goes on only when the state around it changed: a dispatcher's status or order, online or
 * offline, or the vehicle coming back into view. An older seq is a regression and is dropped
 * (counted). At the end of a resumed snapshot, a vehicle handed on before and not restated by it
 * left the view while the watch was away: it gets an `exit` (unless the app last saw it offline,
 * which the tracker's area watches also drop without one).
 */
import type { LiveEvent, LiveVehicle } from "./types";

interface Handed {
  vehicle: LiveVehicle;
  /** In the app's view now (false after an exit: a later state at the same seq re-enters it). */
  present: boolean;
}

export interface ResumeStats {
  /** Events dropped because the app already had that state (mostly restated snapshots). */
  duplicates: number;
  /** Events dropped because the app already had a newer state of that vehicle. */
  regressions: number;
}

/** -1, 0 or 1: how `a`'s position compares with `b`'s in the vehicle's own order. */
function compareOrder(a: LiveVehicle, b: LiveVehicle): number {
  if (a.seq > 0 && b.seq > 0 && a.seq !== b.seq) return a.seq > b.seq ? 1 : -1;
  if (a.seq === b.seq || a.seq === 0 || b.seq === 0) return Math.sign(a.recordedAtMs - b.recordedAtMs);
  return 0;
}

const sameState = (a: LiveVehicle, b: LiveVehicle) => a.status === b.status && a.orderId === b.orderId && a.online === b.online;

export class ResumeFilter {
  readonly stats: ResumeStats = { duplicates: 0, regressions: 0 };
  private readonly handed = new Map<string, Handed>();
  /** Vehicles handed on before the current stream that its snapshot has not restated yet. */
  private unconfirmed: Set<string> | undefined;
  private streams = 0;

  /** A new stream opens: its snapshot will restate what is in view now. */
  restart(): void {
    this.streams++;
    this.unconfirmed = new Set([...this.handed].filter(([, h]) => h.present).map(([id]) => id));
  }

  /** The vehicles the app has now, by id. */
  vehicles(): Map<string, LiveVehicle> {
    return new Map([...this.handed].filter(([, h]) => h.present).map(([id, h]) => [id, h.vehicle]));
  }

  /**
   * Passes one event of the stream: returns the events to hand on (none, the event itself, or, at
   * the end of a resumed snapshot, the exits of vehicles gone meanwhile and then the end).
   */
  pass(event: LiveEvent): LiveEvent[] {
    switch (event.kind) {
      case "snapshotEnd": {
        const out: LiveEvent[] = [];
        for (const id of this.unconfirmed ?? []) {
          const h = this.handed.get(id)!;
          h.present = false;
          if (h.vehicle.online) out.push({ kind: "exit", vehicleId: id, vehicle: undefined });
        }
        this.unconfirmed = undefined;
        out.push({ kind: "snapshotEnd", resumed: this.streams > 1 });
        return out;
      }
      case "exit": {
        const h = this.handed.get(event.vehicleId);
        if (!h?.present) {
          this.stats.duplicates++;
          return [];
        }
        if (event.vehicle && compareOrder(event.vehicle, h.vehicle) < 0) {
          this.stats.regressions++;
          return [];
        }
        h.present = false;
        if (event.vehicle) h.vehicle = event.vehicle;
        return [event];
      }
      default: {
        const v = event.vehicle;
        this.unconfirmed?.delete(v.id);
        const h = this.handed.get(v.id);
        if (h) {
          const order = compareOrder(v, h.vehicle);
          if (order < 0) {
            this.stats.regressions++;
            return [];
          }
          if (order === 0 && h.present && sameState(v, h.vehicle)) {
            this.stats.duplicates++;
            return [];
          }
        }
        this.handed.set(v.id, { vehicle: v, present: true });
        return [event];
      }
    }
  }
}
