"""A vehicle back from an outage, written with Python's grpcio, for test/grpc-python.test.ts.

Backlogs in one Upload, a flood refused with its trailers, a re-send from seq 1, and a Sync whose
client leaves its acks unread. Each check prints one JSON line {"check": name, ...}.

usage: backlog_client.py STUBS GATEWAY TOKENS_JSON   (TOKENS_JSON: {"vehicle id": "token", ...}; ids
       ending in -100ms, -1s, -flood, -resend, -unread)
"""
import json
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from fleet.v1 import ingest_pb2, ingest_pb2_grpc, position_pb2  # noqa: E402

_, _, gateway, tokens_json = sys.argv
tokens = json.loads(tokens_json)
vehicle = {name.rsplit("-", 1)[1]: name for name in tokens}


def say(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


def auth(v):
    return (("authorization", f"Bearer {tokens[v]}"),)


def backlog(v, n, step_us, first_seq=1, lat=None):
    """n points recorded step_us apart, the last one a minute ago."""
    last = int(time.time() * 1_000_000) - 60_000_000
    out = []
    for i in range(n):
        ts = Timestamp()
        ts.FromMicroseconds(last - (n - 1 - i) * step_us)
        out.append(position_pb2.Position(vehicle_id=v, seq=first_seq + i, recorded_at=ts, lat=52.5 + i * 1e-6 if lat is None else lat, lon=13.4, speed=8.0, heading=90.0, accuracy=4.0))
    return out


def trailers(md):
    return {k: v for k, v in (md or ())}


channel = grpc.insecure_channel(gateway)
ingest = ingest_pb2_grpc.IngestServiceStub(channel)


def upload(v, points):
    return ingest.Upload.with_call((ingest_pb2.UploadRequest(position=p) for p in points), metadata=auth(v), timeout=30)


for name, n, step in (("100ms", 1000, 100_000), ("1s", 5000, 1_000_000)):
    v = vehicle[name]
    res, call = upload(v, backlog(v, n, step))
    say(f"backlog-{name}", durable=res.ack.durable_seq, accepted=res.ack.accepted, rejected=len(res.ack.rejected), trailer=trailers(call.trailing_metadata()).get("fleet-durable-seq"))

v = vehicle["flood"]
try:
    upload(v, backlog(v, 2000, 1000))
    say("flood", code="OK")
except grpc.RpcError as err:
    t = trailers(err.trailing_metadata())
    say("flood", code=err.code().name, message=err.details(), retry_after_ms=t.get("retry-after-ms"), durable=t.get("fleet-durable-seq"))

v = vehicle["resend"]
points = backlog(v, 3000, 1_000_000)
first, _ = upload(v, points[:1800])
again, call = upload(v, points)
say("resend", first=first.ack.durable_seq, durable=again.ack.durable_seq, accepted=again.ack.accepted, reasons=sorted({ingest_pb2.RejectReason.Name(r.reason) for r in again.ack.rejected}))

# Sync: 20,000 refused points (NaN latitude) and one good one, the acks left unread for a while.
v = vehicle["unread"]
total = 20_000
bad = backlog(v, total, 100_000, lat=float("nan"))
good = backlog(v, 1, 100_000, first_seq=total + 1)
sent = [0]


def requests():
    for p in bad + good:
        sent[0] += 1
        yield ingest_pb2.SyncRequest(position=p)


responses = ingest.Sync(requests(), metadata=auth(v), timeout=60)
time.sleep(2)
held = ingest.Resume(ingest_pb2.ResumeRequest(), metadata=auth(v), timeout=10).durable_seq
sent_while_unread = sent[0]
acks = list(responses)
say(
    "sync-unread",
    durable_while_unread=held,
    sent_while_unread=sent_while_unread,
    rejected=sum(len(a.ack.rejected) for a in acks),
    largest_ack=max(len(a.ack.rejected) for a in acks),
    durable=acks[-1].ack.durable_seq,
    code=responses.code().name,
)
