import { expect, test } from "bun:test";
import { controlCharAt, controlCharMessage } from "./ids";

test("ids - finds the first control character, and says which and where", () => {
  expect(controlCharAt("truck-42")).toBe(-1);
  expect(controlCharAt("Lkw-Ä-7 ✓")).toBe(-1);
  expect(controlCharAt("a\u0000b\u0001")).toBe(1);
  expect(controlCharAt("\u007f")).toBe(0);
  expect(controlCharAt("tab\there")).toBe(3);
  expect(controlCharMessage("order_id", "o-\u001f")).toBe("order_id has a control character (U+001F) at position 2: send printable text");
});
