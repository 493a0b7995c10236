/**
 * The development stack: real nats-server, redis-server, PostgreSQL and s3rver on free loopback
 * ports (stack.ts composes nats.ts, redis.ts, postgres.ts and s3.ts), the shared test setup (testing.ts) and service
 * processes. For tests, the CLI and the benches; services never import it.
 */
export { freePort } from "./free-port";
export { startServiceProcess, type ServiceProcess } from "./service-process";
export { timescalePreloadOptions } from "./postgres";
export { startStack, type Stack } from "./stack";
export { testStack } from "./testing";
