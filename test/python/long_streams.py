"""Long streams and large messages from Python's grpcio (gRPC's C core), for test/long-streams.test.ts.

It shares no code with the platform: its stubs are generated from proto/ by grpc_tools at test
time. It prints one JSON line {"check": MODE, ...}; the test asserts on it.

usage: long_streams.py STUBS TARGET CA_FILE|- TOKEN VEHICLE MODE COUNT [FIRST_SEQ]
  MODE sync     one Sync stream carrying COUNT points; reads acks as they come
  MODE publish  one Publish (unary) whose request is COUNT bytes long, give or take a point
Points are recorded 200 ms apart, ending now (a vehicle's backlog at 5 fixes a second), along a
straight road at 0.55 m/s.
"""
import json
import sys
import time

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from fleet.v1 import ingest_pb2, ingest_pb2_grpc, position_pb2  # noqa: E402

_, _, target, ca_file, token, vehicle, mode, count = sys.argv[:8]
count = int(count)
first_seq = int(sys.argv[8]) if len(sys.argv) > 8 else 1
metadata = (("authorization", f"Bearer {token}"),)
options = [("grpc.max_send_message_length", 16 * 1024 * 1024), ("grpc.max_receive_message_length", 16 * 1024 * 1024)]
if ca_file == "-":
    channel = grpc.insecure_channel(target, options=options)
else:
    with open(ca_file, "rb") as f:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=f.read()), options=options)
ingest = ingest_pb2_grpc.IngestServiceStub(channel)
start_ms = int(time.time() * 1000) - min(count, 500_000) * 200


def position(i):
    seq = first_seq + i
    ts = Timestamp()
    ts.FromMilliseconds(start_ms + i * 200)
    return position_pb2.Position(vehicle_id=vehicle, seq=seq, recorded_at=ts, lat=48.0 + i * 1e-6, lon=11.0, speed=8.0, heading=90.0, accuracy=4.0)


def say(**fields):
    print(json.dumps({"check": mode, **fields}), flush=True)


t0 = time.time()
try:
    if mode == "sync":
        acks = []

        def requests():
            for i in range(count):
                yield ingest_pb2.SyncRequest(position=position(i))

        for resp in ingest.Sync(requests(), metadata=metadata, timeout=120):
            acks.append(resp.ack.durable_seq)
            if resp.ack.durable_seq >= first_seq + count - 1:
                break
        say(durable=acks[-1] if acks else 0, acks=len(acks), rejected=0, seconds=round(time.time() - t0, 2))
    elif mode == "publish":
        target_bytes = count
        request = ingest_pb2.PublishRequest(positions=[position(0)])
        per_point = request.ByteSize()
        request = ingest_pb2.PublishRequest(positions=[position(i) for i in range(target_bytes // per_point)])
        resp = ingest.Publish(request, metadata=metadata, timeout=60)
        say(bytes=request.ByteSize(), points=len(request.positions), durable=resp.ack.durable_seq, accepted=resp.ack.accepted, rejected=len(resp.ack.rejected), seconds=round(time.time() - t0, 2))
    else:
        raise SystemExit(f"unknown mode {mode}")
except grpc.RpcError as err:
    say(code=err.code().name, message=err.details(), seconds=round(time.time() - t0, 2))
