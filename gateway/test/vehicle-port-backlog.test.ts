/**
 * test/backlog.test.ts again, its grpc-js cases against the gateway's vehicle port (GATEWAY_VEHICLE_PORT,
 * lib/h2): the same answers as on the main port (cases that name the main port's URL stay there).
 */
export {};
process.env.GATEWAY_TEST_LISTENER = "vehicle";
await import("../../test/backlog.test.ts");
