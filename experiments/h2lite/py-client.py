# Python grpcio (gRPC C core) generic bidi client: N messages of SIZE bytes, reads the answers.
# usage: python3 py-client.py PORT METHOD N SIZE
import json, sys, time, grpc
port, method, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
call = ch.stream_stream(method, request_serializer=None, response_deserializer=None)
def gen():
    for i in range(n):
        yield i.to_bytes(4, "big") + bytes([i & 255]) * (size - 4)
t0 = time.time(); got = 0; nbytes = 0; code = None; details = ""
try:
    for r in call(gen(), metadata=[("authorization", "Bearer " + "x" * 300)]):
        got += 1; nbytes += len(r)
    code = 0
except grpc.RpcError as e:
    code = e.code().value[0]; details = e.details()
print(json.dumps({"client": "grpcio " + grpc.__version__, "method": method, "sent": n, "got": got, "bytes_received": nbytes, "code": code, "details": details, "ms": int((time.time() - t0) * 1000)}))
