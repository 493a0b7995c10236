/**
 * gateway/test/ingest.test.ts again, its grpc-js cases against the vehicle port (GATEWAY_VEHICLE_PORT,
 * lib/h2 through lib/grpc/serve-lite.ts): the same codes and messages as on the main port. Its
 * connect-node and HTTP/1.1 cases still go to the main port (the vehicle port speaks gRPC only).
 */
export {};
process.env.GATEWAY_TEST_LISTENER = "vehicle";
await import("./ingest.test.ts");
