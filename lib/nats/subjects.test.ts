import { expect, test } from "bun:test";
import { liveOrderSubject, liveSubject, subjectToken } from "./subjects";

test("subjects - a vehicle id becomes one subject token: dots, spaces and wildcards replaced, plain ids kept", () => {
  expect(subjectToken("truck-9_A")).toBe("truck-9_A");
  expect(subjectToken("a.b c*d>e\tf\u00a0g")).toBe("a_b_c_d_e_f_g");
  expect(subjectToken("vélo")).toBe("vélo");
  expect(liveSubject("u33dcxyz", "a.b")).toBe("live.u33.u33dc.u33dcx.a_b");
});

test("subjects - an order's live subject names its fleet: the same order id in two fleets is two subjects", () => {
  expect(liveOrderSubject("north", "ORD-1")).toBe("liveorder.north.ORD-1");
  expect(liveOrderSubject("south", "ORD-1")).not.toBe(liveOrderSubject("north", "ORD-1"));
  expect(liveOrderSubject("", "a.b")).toBe("liveorder._.a_b");
});
