/**
 * The gateway as clients outside this repository reach it: h2 over TLS (grpc-js with a CA it
 * trusts, browsers' fetch over HTTPS) and Connect-Web's transports (gRPC-Web and Connect over
 * fetch, HTTP/1.1) — the ones a browser page uses.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import * as grpc from "@grpc/grpc-js";
import { IngestService, RejectReason, UploadRequestSchema, UploadResponseSchema, type UploadRequest } from "../gen/fleet/v1/ingest_pb";
import { bearer, grpcUpload, point, startTestGateway, uniqueName, type TestGateway } from "../gateway/test/helpers";

/** A grpc-js client of Upload with the given channel credentials. */
function grpcClientWith(target: string, credentials: grpc.ChannelCredentials): grpc.Client {
  const Client = grpc.makeGenericClientConstructor(
    {
      upload: {
        path: "/fleet.v1.IngestService/Upload",
        requestStream: true,
        responseStream: false,
        requestSerialize: (m: UploadRequest) => Buffer.from(toBinary(UploadRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(UploadRequestSchema, b),
        responseSerialize: () => Buffer.alloc(0),
        responseDeserialize: (b: Buffer) => fromBinary(UploadResponseSchema, b),
      },
    },
    "IngestService",
  );
  // Own connection per client: the trusting and the untrusting one must not share a channel.
  return new Client(target, credentials, { "grpc.use_local_subchannel_pool": 1, "grpc.ssl_target_name_override": "localhost" });
}

// A committed self-signed certificate for localhost (see test/fixtures/README.md).
const certFile = join(import.meta.dir, "fixtures", "localhost-cert.pem");
const keyFile = join(import.meta.dir, "fixtures", "localhost-key.pem");

describe("tls", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ GATEWAY_TLS_CERT: certFile, GATEWAY_TLS_KEY: keyFile });
  });
  afterAll(() => gw.gateway.close());

  test("tls - grpc-js over h2 with TLS uploads, and a client that does not trust the certificate is refused", async () => {
    expect(gw.gateway.url).toStartWith("https://");
    const v = uniqueName("tls");
    const trusted = grpcClientWith(gw.target, grpc.credentials.createSsl(readFileSync(certFile)));
    const ok = await grpcUpload<{ ack: { durableSeq: number } }>(trusted, bearer(await gw.token(v)), [
      create(UploadRequestSchema, { position: point(v, 1) }),
      create(UploadRequestSchema, { position: point(v, 2) }),
    ]);
    expect(ok.error).toBeUndefined();
    expect(ok.response!.ack.durableSeq).toBe(2);
    trusted.close();

    const untrusting = grpcClientWith(gw.target, grpc.credentials.createSsl());
    const refused = await grpcUpload(untrusting, bearer(await gw.token(v)), [create(UploadRequestSchema, { position: point(v, 3) })]);
    expect(refused.error?.code).toBe(grpc.status.UNAVAILABLE);
    untrusting.close();
  });

  test("tls - Connect over HTTPS (HTTP/1.1, as a browser would) publishes", async () => {
    const v = uniqueName("tlsweb");
    const token = await gw.token(v);
    const client = createClient(
      IngestService,
      createConnectTransport({
        baseUrl: gw.gateway.url,
        // Bun's fetch takes the CA to trust as `tls.ca` (a browser would trust it from its store).
        fetch: Object.assign(
          (input: RequestInfo | URL, init?: RequestInit) => fetch(input, { ...init, tls: { ca: readFileSync(certFile, "utf8") } }),
          {
            preconnect: fetch.preconnect,
          },
        ),
      }),
    );
    const res = await client.publish({ positions: [point(v, 1)] }, { headers: { authorization: `Bearer ${token}` } });
    expect(res.ack?.durableSeq).toBe(1);
  });
});

describe("connect-web", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.gateway.close());

  for (const [name, makeTransport] of [
    ["grpc-web", createGrpcWebTransport],
    ["connect", createConnectTransport],
  ] as const) {
    test(`connect-web - ${name} transport over fetch publishes, refuses a bad point with its reason, resumes`, async () => {
      const v = uniqueName(name.replace("-", ""));
      const headers = { authorization: `Bearer ${await gw.token(v)}` };
      const client = createClient(IngestService, makeTransport({ baseUrl: gw.gateway.url }));
      const res = await client.publish({ positions: [point(v, 1), point(v, 2, { lat: 91 }), point(v, 3)] }, { headers });
      expect(res.ack?.durableSeq).toBe(3);
      expect(res.ack?.rejected.map((r) => [r.seq, r.reason])).toEqual([[2, RejectReason.INVALID_COORDINATES]]);
      expect((await client.resume({}, { headers })).durableSeq).toBe(3);
      const stored = (await gw.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq);
      expect(stored).toEqual([1, 3]);
    });

    test(`connect-web - ${name} transport without a token is UNAUTHENTICATED`, async () => {
      const client = createClient(IngestService, makeTransport({ baseUrl: gw.gateway.url }));
      const err = await client.resume({}).then(
        () => null,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code).toBe(Code.Unauthenticated);
      expect(err?.rawMessage).toContain("missing token");
    });
  }
});
