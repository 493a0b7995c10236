import { describe, expect, test } from "bun:test";
import { SignJWT, UnsecuredJWT } from "jose";
import { AuthError, mintVehicleToken, mintWatchToken, verifyBearer, verifyToken } from "./auth";

const keys = { secret: "test-secret-of-sufficient-length", issuer: "fleet", audience: "fleet" };

/** A vehicle token signed by hand, to build what mintVehicleToken never would. */
function handSigned({ alg = "HS256", exp }: { alg?: string; exp?: number | string }): Promise<string> {
  const jwt = new SignJWT({ role: "vehicle" }).setProtectedHeader({ alg }).setSubject("truck-1").setIssuer("fleet").setAudience("fleet");
  if (exp !== undefined) jwt.setExpirationTime(exp);
  return jwt.sign(new TextEncoder().encode(keys.secret));
}

describe("auth", () => {
  test("auth - a vehicle token binds its vehicle and fleet", async () => {
    const token = await mintVehicleToken(keys, "truck-1", { fleetId: "north" });
    expect(await verifyToken(keys, token)).toEqual({ role: "vehicle", vehicleId: "truck-1", fleetId: "north" });
  });

  test("auth - a watch token lists its grants", async () => {
    const token = await mintWatchToken(keys, { vehicles: ["a"], orders: ["north/o-1"], dispatch: true });
    const claims = await verifyToken(keys, token);
    expect(claims).toMatchObject({ role: "watch", vehicles: ["a"], fleets: [], orders: ["north/o-1"], all: false, dispatch: true });
  });

  test("auth - an order grant must name its fleet, and one that does not grants nothing", async () => {
    await expect(mintWatchToken(keys, { orders: ["o-1"] })).rejects.toThrow(/names no fleet.*fleet\/order/);
    await expect(mintVehicleToken(keys, "truck-1", { fleetId: "a/b" })).rejects.toThrow(/holds a "\/"/);
    const legacy = await new SignJWT({ role: "watch", vehicles: ["a"], orders: ["o-1", "north/o-2"] })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("w")
      .setIssuer("fleet")
      .setAudience("fleet")
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(keys.secret));
    expect(await verifyToken(keys, legacy)).toMatchObject({ orders: ["north/o-2"] });
  });

  test("auth - refuses a token signed with another secret", async () => {
    const token = await mintVehicleToken({ ...keys, secret: "another-secret-entirely" }, "truck-1");
    await expect(verifyToken(keys, token)).rejects.toThrow(/signature/);
  });

  test("auth - refuses alg none", async () => {
    const token = new UnsecuredJWT({ role: "vehicle" })
      .setSubject("truck-1")
      .setIssuer("fleet")
      .setAudience("fleet")
      .setExpirationTime("1h")
      .encode();
    await expect(verifyToken(keys, token)).rejects.toBeInstanceOf(AuthError);
  });

  test("auth - refuses another algorithm than HS256", async () => {
    const token = await handSigned({ alg: "HS512", exp: "1h" });
    await expect(verifyToken(keys, token)).rejects.toThrow(/algorithm/);
  });

  test("auth - refuses an expired token", async () => {
    const token = await handSigned({ exp: Math.floor(Date.now() / 1000) - 60 });
    await expect(verifyToken(keys, token)).rejects.toThrow(/expired/);
  });

  test("auth - refuses a token without exp", async () => {
    const token = await handSigned({});
    await expect(verifyToken(keys, token)).rejects.toThrow(/exp/);
  });

  test("auth - refuses the wrong issuer and audience", async () => {
    const other = await mintVehicleToken({ ...keys, issuer: "someone-else" }, "truck-1");
    await expect(verifyToken(keys, other)).rejects.toThrow(/iss/);
    const aud = await mintVehicleToken({ ...keys, audience: "other" }, "truck-1");
    await expect(verifyToken(keys, aud)).rejects.toThrow(/aud/);
  });

  test("auth - bearer header must be present and well formed", async () => {
    await expect(verifyBearer(keys, undefined)).rejects.toThrow(/missing token/);
    await expect(verifyBearer(keys, "Basic abc")).rejects.toThrow(/Bearer/);
    const token = await mintVehicleToken(keys, "v");
    expect(await verifyBearer(keys, `Bearer ${token}`)).toMatchObject({ vehicleId: "v" });
  });

  test("auth - a watch token must grant something", async () => {
    await expect(mintWatchToken(keys, {})).rejects.toThrow(/grant/);
  });
});
