import { expect, test } from "bun:test";
import { isClosedSocketWrite } from "./pg";

test("pg - recognises postgres.js's write to a closed socket, and nothing else", () => {
  const bun = new TypeError("null is not an object (evaluating 'socket.write')");
  bun.stack = "TypeError: null is not an object (evaluating 'socket.write')\n    at nextWrite (/app/node_modules/postgres/src/connection.js:255:15)";
  const node = new TypeError("Cannot read properties of null (reading 'write')");
  node.stack = "TypeError: Cannot read properties of null (reading 'write')\n    at Immediate.nextWrite (/app/node_modules/postgres/src/connection.js:255:22)";
  expect(isClosedSocketWrite(bun)).toBe(true);
  expect(isClosedSocketWrite(node)).toBe(true);
  const other = new TypeError("null is not an object (evaluating 'socket.write')");
  other.stack = "TypeError: …\n    at send (/app/lib/thing.js:1:1)";
  expect(isClosedSocketWrite(other)).toBe(false);
  expect(isClosedSocketWrite(new Error("socket.write"))).toBe(false);
});
