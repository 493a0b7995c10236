/**
 * NATS for the services: the connection and the positions stream (jetstream.ts), and the
 * subjects, headers and partitioning every service agrees on (subjects.ts).
 */
export { natsServers, connectNats, ensurePositionsStream, positionsStreamSettings, watchStreamLimits, type Nats } from "./jetstream";
export {
  CONSUMERS,
  HEADERS,
  POSITIONS_STREAM,
  liveCellWildcard,
  liveOrderSubject,
  liveSubject,
  liveSubscriptionsOf,
  liveVehicleWildcard,
  partitionOf,
  positionsSubject,
} from "./subjects";
