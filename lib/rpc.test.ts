import { describe, expect, test } from "bun:test";
import { createContextValues, type StreamRequest, type StreamResponse } from "@connectrpc/connect";
import { AuthError, mintVehicleToken } from "./auth";
import { claimsOf, createAuthInterceptor } from "./rpc";

const keys = { secret: "rpc-test-secret", issuer: "fleet", audience: "fleet" };

/** Runs the interceptor on a request with this authorization header; resolves to the vehicle id. */
function call(auth: ReturnType<typeof createAuthInterceptor>, header: string): Promise<string> {
  const req = { header: new Headers({ authorization: header }), contextValues: createContextValues() } as unknown as StreamRequest;
  const next = async (r: StreamRequest) => {
    const claims = claimsOf({ values: r.contextValues } as Parameters<typeof claimsOf>[0]);
    return { claims } as unknown as StreamResponse;
  };
  return (auth(next as never)(req) as unknown as Promise<{ claims: { vehicleId: string } }>).then((r) => r.claims.vehicleId);
}

describe("auth interceptor", () => {
  test("auth interceptor - a remembered token is still refused once it expired", async () => {
    const auth = createAuthInterceptor(keys);
    const token = await mintVehicleToken(keys, "v-1", { ttlSeconds: 1 });
    expect(await call(auth, `Bearer ${token}`)).toBe("v-1");
    expect(await call(auth, `Bearer ${token}`)).toBe("v-1");
    await Bun.sleep(2100);
    const err = await call(auth, `Bearer ${token}`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toContain("expired");
  });

  test("auth interceptor - a forged token is refused every time", async () => {
    const auth = createAuthInterceptor(keys);
    const forged = await mintVehicleToken({ ...keys, secret: "another" }, "v-2");
    for (let i = 0; i < 2; i++) expect(await call(auth, `Bearer ${forged}`).catch((e: unknown) => e)).toBeInstanceOf(AuthError);
  });
});
