import { expect, test } from "bun:test";
import { liveSubject, subjectToken } from "./subjects";

test("subjects - a vehicle id becomes one subject token: dots, spaces and wildcards replaced, plain ids kept", () => {
  expect(subjectToken("truck-9_A")).toBe("truck-9_A");
  expect(subjectToken("a.b c*d>e\tf\u00a0g")).toBe("a_b_c_d_e_f_g");
  expect(subjectToken("vélo")).toBe("vélo");
  expect(liveSubject("u33dcxyz", "a.b")).toBe("live.u33.u33dc.u33dcx.a_b");
});
