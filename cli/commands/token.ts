/** `fleet token vehicle <id>` and `fleet token watch …`: mint tokens for the configured secret. */
import { parseArgs } from "node:util";
import { loadConfig, parseDuration, usesDevSecret } from "../../lib/config";
import { mintVehicleToken, mintWatchToken, tokenKeys } from "../../lib/auth";

const help = `usage:
  fleet token vehicle <vehicle-id> [--fleet F] [--ttl 30d]
      a token that lets one vehicle send its own positions to the gateway
  fleet token watch [--vehicle ID]... [--fleet F]... [--order FLEET/ORDER]... [--all] [--dispatch] [--admin] [--ttl 1d]
      a token that lets its holder see the listed vehicles, fleets or orders (--all: every vehicle;
      --dispatch: may also set vehicle status; --admin: everything, including archive runs).
      An order is named with its fleet (order ids are unique within a fleet only): --order north/ORD-1

Tokens are HS256 JWTs signed with FLEET_JWT_SECRET (issuer FLEET_JWT_ISSUER, audience FLEET_JWT_AUDIENCE).
Use them as "authorization: Bearer <token>". The token is printed alone on stdout.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: "boolean", short: "h" },
      fleet: { type: "string", multiple: true },
      vehicle: { type: "string", multiple: true },
      order: { type: "string", multiple: true },
      all: { type: "boolean" },
      dispatch: { type: "boolean" },
      admin: { type: "boolean" },
      ttl: { type: "string" },
    },
  });
  const [kind, id] = positionals;
  if (values.help || !kind) {
    console.log(help);
    return values.help ? 0 : 2;
  }
  const config = loadConfig();
  const keys = tokenKeys(config);
  if (usesDevSecret(config)) console.error("fleet: note: signing with the built-in development secret (set FLEET_JWT_SECRET for real use)");
  const ttlSeconds = values.ttl ? Math.max(1, Math.round(parseDuration(values.ttl, "--ttl") / 1000)) : undefined;
  if (kind === "vehicle") {
    if (!id) {
      console.error("fleet token vehicle: name the vehicle, e.g. `fleet token vehicle truck-42`");
      return 2;
    }
    console.log(await mintVehicleToken(keys, id, { fleetId: values.fleet?.[0] ?? "", ttlSeconds }));
    return 0;
  }
  if (kind === "watch") {
    if (!values.all && !values.admin && !values.vehicle && !values.fleet && !values.order) {
      console.error("fleet token watch: grant something: --vehicle ID, --fleet F, --order FLEET/ORDER or --all");
      return 2;
    }
    console.log(
      await mintWatchToken(keys, {
        vehicles: values.vehicle,
        fleets: values.fleet,
        orders: values.order,
        all: values.all,
        dispatch: values.dispatch,
        admin: values.admin,
        ttlSeconds,
      }),
    );
    return 0;
  }
  console.error(`fleet token: unknown kind "${kind}" (vehicle or watch)\n\n${help}`);
  return 2;
}
