/**
 * Test helpers. `bun test` runs every test file in one process, so the servers are started once and
 * shared: each file asks for the services it needs and gets the same stack, grown when a later file
 * needs more. Tests isolate themselves by names (unique stream, key prefix, schema, bucket prefix),
 * not by servers.
 */
import { ALL_SERVICES, startStack, type ServiceName, type Stack } from "./stack";

let shared: Stack | undefined;
let queue: Promise<unknown> = Promise.resolve();

/**
 * The stack of this test process, started on first use with `services` (default all) and stopped
 * when the process exits (by the stack's exit hook and watchdog). Services given by NATS_URL,
 * REDIS_URL, DATABASE_URL or S3_ENDPOINT are used as they are.
 */
export async function testStack(services: ServiceName[] = [...ALL_SERVICES]): Promise<Stack> {
  // One caller at a time, so two files asking at once do not start two stacks.
  const next = queue.then(async () => {
    if (!shared) {
      shared = await startStack({ services });
      return shared;
    }
    const stack = shared;
    // Starts what is missing, and restarts what an earlier test stopped and left down.
    await Promise.all(services.map((name) => stack.startService(name)));
    return stack;
  });
  queue = next.catch(() => {});
  return next;
}
