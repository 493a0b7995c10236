import { describe, expect, test } from "bun:test";
import { createContextValues, type StreamRequest, type StreamResponse } from "@connectrpc/connect";
import { AuthError, mintVehicleToken, mintWatchToken } from "../auth";
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

  test("auth interceptor - the scheme in any case and one or more spaces pass, and are one cache entry keyed by the token", async () => {
    const auth = createAuthInterceptor(keys);
    const token = await mintVehicleToken(keys, "v-3");
    for (const header of [`Bearer ${token}`, `bearer  ${token}`, `BEARER ${token}`, `bEaReR   ${token}`]) {
      expect(await call(auth, header)).toBe("v-3");
    }
    expect(auth.cache.size).toBe(1);
    expect(auth.cache.bytes).toBeLessThan(token.length + 400);
  });

  test("auth interceptor - a tab, trailing words, another scheme or no token are refused with what to send", async () => {
    const auth = createAuthInterceptor(keys);
    const token = await mintVehicleToken(keys, "v-4");
    for (const header of [`Bearer\t${token}`, `Bearer ${token} extra`, `Basic ${token}`, `Bearer`, token, `Bearer ${token}!`]) {
      const err = await call(auth, header).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect((err as Error).message).toBe('authorization header must be "Bearer <token>": the word Bearer, a space, then the token');
    }
    expect(((await call(auth, "").catch((e: unknown) => e)) as Error).message).toContain("missing token");
    expect(auth.cache.size).toBe(0);
  });

  test("auth interceptor - the token cache stays within its byte bound, forgetting the oldest", async () => {
    const auth = createAuthInterceptor(keys, { cacheBytes: 128 * 1024 });
    const grant = Array.from({ length: 40 }, (_, i) => `vehicle-with-a-long-id-${i}`);
    const tokens = await Promise.all(Array.from({ length: 60 }, (_, i) => mintWatchToken(keys, { vehicles: [...grant, `v-${i}`] })));
    for (const t of tokens) await call(auth, `Bearer ${t}`).catch(() => undefined);
    expect(auth.cache.bytes).toBeLessThanOrEqual(128 * 1024);
    expect(auth.cache.size).toBeGreaterThan(5);
    expect(auth.cache.size).toBeLessThan(60);
    // The newest is remembered, the oldest forgotten.
    expect(auth.cache.get(tokens[59]!)).toBeDefined();
    expect(auth.cache.get(tokens[0]!)).toBeUndefined();
  });
});
