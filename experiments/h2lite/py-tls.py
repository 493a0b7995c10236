import grpc, sys
creds = grpc.ssl_channel_credentials(open("/tmp/h2lite/tls/cert.pem", "rb").read())
ch = grpc.secure_channel(f"localhost:{sys.argv[1]}", creds)
call = ch.stream_stream("/h2lite.Demo/Echo", request_serializer=None, response_deserializer=None)
print({"client": "grpcio TLS", "got": sum(1 for _ in call(iter([bytes(100)] * 1000)))})
