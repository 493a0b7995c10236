import { expect, test } from "bun:test";
import { isClosedSocketWrite, isDataException } from "./pg";

test("pg - recognises postgres.js's write to a closed socket, and nothing else", () => {
  const bun = new TypeError("null is not an object (evaluating 'socket.write')");
  bun.stack =
    "TypeError: null is not an object (evaluating 'socket.write')\n    at nextWrite (/app/node_modules/postgres/src/connection.js:255:15)";
  const node = new TypeError("Cannot read properties of null (reading 'write')");
  node.stack =
    "TypeError: Cannot read properties of null (reading 'write')\n    at Immediate.nextWrite (/app/node_modules/postgres/src/connection.js:255:22)";
  expect(isClosedSocketWrite(bun)).toBe(true);
  expect(isClosedSocketWrite(node)).toBe(true);
  const other = new TypeError("null is not an object (evaluating 'socket.write')");
  other.stack = "TypeError: …\n    at send (/app/lib/thing.js:1:1)";
  expect(isClosedSocketWrite(other)).toBe(false);
  expect(isClosedSocketWrite(new Error("socket.write"))).toBe(false);
});

test("pg - a data exception (SQLSTATE class 22) or a RangeError is the data's fault; a lost connection or a unique violation is not", () => {
  expect(isDataException(Object.assign(new Error("value out of range for type smallint"), { code: "22003" }))).toBe(true);
  expect(isDataException(Object.assign(new Error("invalid byte sequence"), { code: "22021" }))).toBe(true);
  expect(isDataException(new RangeError("Invalid Date"))).toBe(true);
  expect(isDataException(Object.assign(new Error("duplicate key"), { code: "23505" }))).toBe(false);
  expect(isDataException(Object.assign(new Error("closed"), { code: "CONNECTION_CLOSED" }))).toBe(false);
  expect(isDataException(undefined)).toBe(false);
});
