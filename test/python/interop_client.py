"""A vehicle and a watcher written with Python's grpcio (gRPC's C core), for test/grpc-python.test.ts.

It shares no code with the platform: its stubs are generated from proto/ by grpc_tools at test
time. Each check prints one JSON line {"check": name, ...}; the test asserts on them.

usage: interop_client.py STUBS GATEWAY TRACKER VEHICLE_ID VEHICLE_TOKEN WATCH_TOKEN OTHER_TOKEN
"""
import json
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from fleet.v1 import geo_pb2, ingest_pb2, ingest_pb2_grpc, position_pb2, tracker_pb2, tracker_pb2_grpc  # noqa: E402

_, _, gateway, tracker_target, vehicle, vehicle_token, watch_token, other_token = sys.argv


def say(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


def auth(token):
    return (("authorization", f"Bearer {token}"),)


def status(err):
    return {"code": err.code().name, "message": err.details()}


def point(seq, lat=52.52, lon=13.405, vehicle_id=vehicle):
    ts = Timestamp()
    # seq ms apart: the gateway takes one fix per vehicle and millisecond.
    ts.FromMilliseconds(int(time.time() * 1000) + seq)
    return position_pb2.Position(vehicle_id=vehicle_id, seq=seq, recorded_at=ts, lat=lat + seq * 1e-5, lon=lon, speed=8.0, heading=90.0, accuracy=4.0)


ingest = ingest_pb2_grpc.IngestServiceStub(grpc.insecure_channel(gateway))
tracker = tracker_pb2_grpc.TrackerServiceStub(grpc.insecure_channel(tracker_target))

say("resume", durable=ingest.Resume(ingest_pb2.ResumeRequest(), metadata=auth(vehicle_token), timeout=10).durable_seq)

# A watch of the vehicle, open before it sends: a snapshot (empty), then its points live.
events = []
watch_open = threading.Event()


def watch():
    try:
        for resp in tracker.WatchVehicles(tracker_pb2.WatchVehiclesRequest(vehicle_ids=[vehicle]), metadata=auth(watch_token), timeout=10):
            for e in resp.events:
                events.append({"kind": tracker_pb2.EventKind.Name(e.kind), "seq": e.vehicle.position.seq if e.HasField("vehicle") else 0})
                if e.kind == tracker_pb2.EVENT_KIND_SNAPSHOT_END:
                    watch_open.set()
                if e.HasField("vehicle") and e.vehicle.position.seq == 5:
                    return
    except grpc.RpcError as err:
        events.append({"kind": "error", **status(err)})
        watch_open.set()


watcher = threading.Thread(target=watch)
watcher.start()
watch_open.wait(10)

# Sync (bidi): three points, the second with a NaN latitude; an ack per stored batch.
acks = []


def sync_requests():
    for seq, lat in ((1, 52.52), (2, float("nan")), (3, 52.52)):
        yield ingest_pb2.SyncRequest(position=point(seq, lat=lat))
        time.sleep(0.05)


for resp in ingest.Sync(sync_requests(), metadata=auth(vehicle_token), timeout=10):
    acks.append({"durable": resp.ack.durable_seq, "rejected": [[r.seq, ingest_pb2.RejectReason.Name(r.reason), r.message] for r in resp.ack.rejected]})
say("sync", acks=acks)

# Upload (client streaming): one ack at the end.
up = ingest.Upload(iter([ingest_pb2.UploadRequest(position=point(4)), ingest_pb2.UploadRequest(position=point(5))]), metadata=auth(vehicle_token), timeout=10)
say("upload", durable=up.ack.durable_seq, accepted=up.ack.accepted)

watcher.join(10)
say("watch", events=events)

g = tracker.GetVehicle(tracker_pb2.GetVehicleRequest(vehicle_id=vehicle), metadata=auth(watch_token), timeout=10)
say("get-vehicle", seq=g.vehicle.position.seq, online=g.vehicle.online)

# Refusals: each a gRPC status with a reason.
refusals = {
    "bad-token": lambda: ingest.Resume(ingest_pb2.ResumeRequest(), metadata=auth("not-a-token"), timeout=10),
    "other-vehicle-point": lambda: list(ingest.Sync(iter([ingest_pb2.SyncRequest(position=point(6, vehicle_id=vehicle + "-not-mine"))]), metadata=auth(vehicle_token), timeout=10)),
    "too-large": lambda: ingest.Publish(ingest_pb2.PublishRequest(positions=[point(100 + i) for i in range(6000)]), metadata=auth(vehicle_token), timeout=10),
    "malformed": lambda: grpc.insecure_channel(gateway).unary_unary("/fleet.v1.IngestService/Publish", request_serializer=lambda b: b, response_deserializer=lambda b: b)(
        b"\x0a\xff\xff\xff\xff\x0f", metadata=auth(vehicle_token), timeout=10
    ),
    "not-granted": lambda: tracker.GetVehicle(tracker_pb2.GetVehicleRequest(vehicle_id=vehicle), metadata=auth(other_token), timeout=10),
    "inverted-box": lambda: tracker.Nearby(tracker_pb2.NearbyRequest(area=geo_pb2.Area(box=geo_pb2.Box(min_lat=53, min_lon=13, max_lat=52, max_lon=14))), metadata=auth(watch_token), timeout=10),
}
for name, call in refusals.items():
    try:
        call()
        say(name, code="OK", message="")
    except grpc.RpcError as err:
        say(name, **status(err))
