"""gRPC peers for remedy's tests, from grpcio (the gRPC stack of Google's Python client
libraries), with generic handlers and raw bytes for messages (no protoc).

    python3 grpc_peers.py server CERT KEY    # prints {"port": N}, serves until stdin closes
    python3 grpc_peers.py client TARGET CA   # runs the calls named on stdin, one JSON a line

The server's service `test.Svc`:
  Unary(b"ok")          echoes the request
  Unary(b"fail:N")      fails with status N before any message (a trailers-only answer)
  Stream(b"N:SIZE:S")   sends N messages of SIZE bytes, then ends with status S
  Upload(stream)        answers the number of bytes received
  Chat(stream)          echoes each message as it comes

The client reaches TARGET through the proxy in its environment (grpcio reads https_proxy),
trusting CA, and prints for each call its status name, messages and bytes received.
"""

import json
import sys

import grpc

CODES = {s.value[0]: s for s in grpc.StatusCode}


def serve(cert, key):
    from concurrent import futures

    def unary(request, context):
        if request.startswith(b"fail:"):
            context.abort(CODES[int(request[5:])], "failed as asked")
        return request

    def stream(request, context):
        count, size, status = (int(x) for x in request.split(b":"))
        chunk = b"x" * size
        for _ in range(count):
            yield chunk
        if status:
            context.abort(CODES[status], f"ended with status {status} after {count} messages")

    def upload(requests, context):
        return str(sum(len(r) for r in requests)).encode()

    def chat(requests, context):
        for r in requests:
            yield r

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[
        ("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", handlers),))
    creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    print(json.dumps({"port": port}), flush=True)
    sys.stdin.read()
    server.stop(0)


def call(channel, spec, other_channel):
    """One call as `spec` says; its status, and what came back. `method` names another method
    than the kind's own, `timeout` another deadline in seconds, `metadata_bytes` the size of a
    metadata entry a unary call sends, `pause` that a stream's reader stops after its first
    message until told to go on."""
    kind, arg = spec["call"], spec.get("arg", "").encode()
    method = spec.get("method", f"/test.Svc/{kind}")
    got = []
    try:
        if kind == "Unary":
            metadata = [("x-big", "m" * spec["metadata_bytes"])] if "metadata_bytes" in spec else None
            got.append(channel.unary_unary(method)(arg, timeout=spec.get("timeout", 60),
                                                   metadata=metadata))
        elif kind == "Stream":
            replies = channel.unary_stream(method)(arg, timeout=spec.get("timeout", 120))
            if spec.get("pause"):
                # One message, then nothing read until told (a line on stdin): the stream's
                # window closes meanwhile.
                got.append(next(replies))
                print(json.dumps({"paused": True}), flush=True)
                sys.stdin.readline()
            got.extend(replies)
        elif kind == "StalledThenUnary":
            # `streams` server streams begun and then not read, and meanwhile `calls` unary
            # calls on a channel of their own (another connection to the proxy).
            streams = [channel.unary_stream("/test.Svc/Stream")(arg, timeout=120)
                       for _ in range(spec["streams"])]
            for s in streams:
                next(s)
            # Says so, and waits for a line: the caller looks at the server meanwhile.
            print(json.dumps({"stalled": True}), flush=True)
            sys.stdin.readline()
            with other_channel() as other:
                for _ in range(spec["calls"]):
                    got.append(other.unary_unary("/test.Svc/Unary")(b"ok", timeout=spec["timeout"]))
            for s in streams:
                s.cancel()
        elif kind == "Upload":
            parts = (b"u" * spec["size"] for _ in range(spec["count"]))
            got.append(channel.stream_unary("/test.Svc/Upload")(parts, timeout=120))
        elif kind == "Chat":
            # Ping-pong: each message is sent only once the last one's echo has come back, so a
            # proxy that held a message would stall the call.
            import queue
            outbox = queue.Queue()
            replies = channel.stream_stream("/test.Svc/Chat")(iter(outbox.get, None), timeout=60)
            for i in range(spec["count"]):
                outbox.put(f"ping {i}".encode())
                got.append(next(replies))
            outbox.put(None)
            got.extend(replies)
        status = "OK"
    except grpc.RpcError as e:
        status = e.code().name
        spec["details"] = e.details()
    return {**spec, "status": status, "messages": len(got), "bytes": sum(len(m) for m in got),
            "first": got[0][:32].decode(errors="replace") if got else None}


def client(target, ca):
    creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
    options = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
    # grpcio shares connections between channels with the same options unless told not to.
    other = lambda: grpc.secure_channel(  # noqa: E731
        target, creds, options=options + [("grpc.use_local_subchannel_pool", 1)])
    with grpc.secure_channel(target, creds, options=options) as channel:
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(call(channel, json.loads(line), other)), flush=True)


if __name__ == "__main__":
    {"server": serve, "client": client}[sys.argv[1]](*sys.argv[2:])
