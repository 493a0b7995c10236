/**
 * test/grpc-python.test.ts again, Python grpcio (gRPC's C core) streaming to the gateway's vehicle
 * port (GATEWAY_VEHICLE_PORT, lib/h2) instead of the main port: the same checks, the same answers.
 */
export {};
process.env.GATEWAY_TEST_LISTENER = "vehicle";
await import("../../test/grpc-python.test.ts");
