/**
 * The tracker as a browser page reaches it: Connect-Web's transports (Connect and gRPC-Web) over
 * fetch on HTTP/1.1, with the CORS preflight a browser sends first, for queries and server streams.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventKind, TrackerService, type VehicleEvent } from "../../gen/fleet/v1/tracker_pb";
import { point, startTestTracker, uniqueName, type TestTracker } from "./helpers";

const ORIGIN = "http://dispatch.example.test";

let t: TestTracker;
beforeAll(async () => {
  t = await startTestTracker();
});
afterAll(() => t.close());

/** fetch as a page on ORIGIN sends it; remembers the CORS headers of the answers. */
function browserFetch(seen: Headers[]) {
  return Object.assign(
    async (input: RequestInfo | URL, init?: RequestInit) => {
      const headers = new Headers(init?.headers);
      headers.set("origin", ORIGIN);
      const res = await fetch(input, { ...init, headers });
      seen.push(res.headers);
      return res;
    },
    { preconnect: fetch.preconnect },
  );
}

describe("connect-web", () => {
  test("cors - the preflight of a watch allows the page's origin, method and headers", async () => {
    const res = await fetch(`${t.tracker.url}/fleet.v1.TrackerService/WatchArea`, {
      method: "OPTIONS",
      headers: {
        origin: ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, connect-protocol-version",
      },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    const allowed = res.headers.get("access-control-allow-headers")!.toLowerCase();
    for (const h of ["authorization", "content-type", "connect-protocol-version"]) expect(allowed).toContain(h);
  });

  for (const [name, makeTransport] of [
    ["connect", createConnectTransport],
    ["grpc-web", createGrpcWebTransport],
  ] as const) {
    test(`${name} - get, then an area watch streams the snapshot and a vehicle entering, over HTTP/1.1`, async () => {
      const fleet = uniqueName(name.replace("-", ""));
      const v = uniqueName("web");
      const headers = { authorization: `Bearer ${await t.token({ fleets: [fleet] })}` };
      const seen: Headers[] = [];
      const client = createClient(TrackerService, makeTransport({ baseUrl: t.tracker.url, fetch: browserFetch(seen) }));
      await t.publish([point(v, 1, { fleetId: fleet, lat: -1.0, lon: 36.8 })]);
      for (let i = 0; ; i++) {
        const got = await client.getVehicle({ vehicleId: v }, { headers }).catch(() => undefined);
        if (got) {
          expect(got.vehicle?.position?.seq).toBe(1);
          break;
        }
        if (i > 100) throw new Error("vehicle never arrived");
        await Bun.sleep(20);
      }
      expect(seen.at(-1)!.get("access-control-allow-origin")).toBe(ORIGIN);

      const abort = new AbortController();
      const events: VehicleEvent[] = [];
      const stream = client.watchArea(
        { area: { shape: { case: "circle", value: { lat: -1.0, lon: 36.8, radiusM: 5000 } } } },
        { headers, signal: abort.signal },
      );
      const other = uniqueName("enters");
      const reading = (async () => {
        for await (const res of stream) {
          events.push(...res.events);
          if (events.some((e) => e.kind === EventKind.SNAPSHOT_END) && events.length === 2) {
            await t.publish([point(other, 1, { fleetId: fleet, lat: -1.01, lon: 36.8 })]);
          }
          if (events.some((e) => e.kind === EventKind.ENTER)) break;
        }
      })();
      await reading;
      abort.abort();
      expect(events.map((e) => [EventKind[e.kind], e.vehicle?.position?.vehicleId ?? ""])).toEqual([
        ["SNAPSHOT", v],
        ["SNAPSHOT_END", ""],
        ["ENTER", other],
      ]);
    });

    test(`${name} - a watch without a token is UNAUTHENTICATED, a vehicle the token does not grant PERMISSION_DENIED`, async () => {
      const client = createClient(TrackerService, makeTransport({ baseUrl: t.tracker.url, fetch: browserFetch([]) }));
      const first = async (headers: Record<string, string>) => {
        try {
          for await (const _ of client.watchVehicles({ vehicleIds: ["someone"] }, { headers })) break;
        } catch (e) {
          return ConnectError.from(e);
        }
        return undefined;
      };
      expect((await first({}))?.code).toBe(Code.Unauthenticated);
      const denied = await first({ authorization: `Bearer ${await t.token({ vehicles: ["me"] })}` });
      expect(denied?.code).toBe(Code.PermissionDenied);
      expect(denied?.rawMessage).toContain('does not grant vehicle "someone"');
    });
  }
});
