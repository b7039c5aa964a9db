"""The stock Triton client (`tritonclient.grpc`) against the appliance, over mutual TLS.

Used by scripts/demo (the `demo` command) and by the end-to-end tests (the others, which print
one JSON object). Nothing here is specific to the appliance: it is what an app written against
Triton does, with the address and the three certificate files changed.

Usage: oip_client.py --url HOST:PORT --certs DIR [--no-client-cert] COMMAND ...
  DIR holds ca.pem, cert.pem and key.pem as `provision client issue` writes them.
Commands:
  demo MODELS_DIR            classify a digit and embed three sentences, in words
  check MODELS_DIR           live, ready, metadata, digits accuracy, MiniLM similarities (JSON)
  classify MODELS_DIR K      five digits through the classification extension (class_count=K),
                             JSON {shape, top (the strings), logits, labels}
  call RPC [MODEL]           one call (live|ready|metadata|infer), JSON {ok, code, message}
  flood COUNT                COUNT digit inferences back to back, JSON counts by status code
  infer-text TEXT...         embed texts with minilm, JSON {ok, code, shape}
  call-twice RPC             one call, then (after a line on stdin) a second call on the SAME
                             connection: JSON {first: {...}, second: {...}}
  tls-garbage NBYTES         a TLS session with this client's certificate that sends garbage
                             instead of HTTP/2; JSON {closed_by_server}
  idle COUNT SECONDS         COUNT TLS sessions that complete the handshake and then say
                             nothing for SECONDS; JSON {opened, still_open}
  load THREADS                THREADS clients (one connection each) calling digits in a loop
                             until a line arrives on stdin; JSON {requests, errors (by code),
                             versions: {version: {count, first, last}}} (unix times of the
                             first and last answer from each model version)
  probe                      ServerLive in a loop on one connection until a line arrives on
                             stdin; JSON {calls, failures, p50_ms, max_ms}
  status                     JSON {live, ready}: the values ServerLive and ServerReady return
  health SERVICE             grpc.health.v1 Check through grpcio (the request written by
                             hand), JSON {ok, code, message, status}
  watch SECONDS              grpc.health.v1 Watch (all services) held for SECONDS, then
                             cancelled by the client; JSON {messages, statuses, code} where
                             code is how the stream ended (CANCELLED: by us)
  raw MODEL INPUT DATATYPE SHAPE NBYTES [--fill HEX]
                             one hand-built ModelInferRequest through the package's own
                             compiled protocol (service_pb2), JSON {ok, code, message}
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


def client(args):
    certs = Path(args.certs)
    return grpcclient.InferenceServerClient(
        url=args.url,
        ssl=True,
        root_certificates=str(certs / "ca.pem"),
        private_key=None if args.no_client_cert else str(certs / "key.pem"),
        certificate_chain=None if args.no_client_cert else str(certs / "cert.pem"),
    )


def code_of(error):
    status = error.status() or ""
    return status.replace("StatusCode.", "")


def digits(models_dir, n):
    x = np.fromfile(Path(models_dir) / "digits_test_x.f32", dtype="<f4").reshape(-1, 64)[:n]
    y = np.fromfile(Path(models_dir) / "digits_test_y.u8", dtype=np.uint8)[:n]
    return x, y


# The digits input shape per client, asked once (so `flood` sends only inferences).
_DIGITS_SHAPE = {}


def infer_digits(c, x, class_count=0):
    """Logits for the rows of x, shaped as the model's metadata says (an MLP takes [N, 64], a
    CNN [N, 1, 8, 8]); with class_count, the top classes as the classification extension
    returns them."""
    if id(c) not in _DIGITS_SHAPE:
        _DIGITS_SHAPE[id(c)] = list(c.get_model_metadata("digits").inputs[0].shape)
    dims = _DIGITS_SHAPE[id(c)]
    x = x.reshape([x.shape[0]] + [int(d) for d in dims[1:]]).astype(np.float32)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = grpcclient.InferRequestedOutput("logits", class_count=class_count)
    result = c.infer("digits", [inp], outputs=[out])
    return result.as_numpy("logits")


def embed(c, texts):
    inp = grpcclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    result = c.infer("minilm", [inp])
    return result.as_numpy("embeddings")


def classify(args):
    c = client(args)
    x, y = digits(args.models, 5)
    logits = infer_digits(c, x)
    top = infer_digits(c, x, class_count=args.k)
    print(json.dumps({
        "shape": list(top.shape),
        "top": [[t.decode() for t in row] for row in top],
        "logits": logits.tolist(),
        "labels": y.tolist(),
    }))


def similarities(e):
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return [float(e[0] @ e[1]), float(e[0] @ e[2]), float(e[1] @ e[2])]


def demo(args):
    c = client(args)
    print(f"server live: {c.is_server_live()}, ready: {c.is_server_ready()}")
    meta = c.get_model_metadata("digits")
    print(f"model digits v{meta.versions}: input {meta.inputs[0].name} {meta.inputs[0].datatype} "
          f"{list(meta.inputs[0].shape)} -> {meta.outputs[0].name} {list(meta.outputs[0].shape)}")
    x, y = digits(args.models, 1)
    logits = infer_digits(c, x)
    print(f"digit classified: predicted {int(np.argmax(logits[0]))}, true label {int(y[0])}")
    e = embed(c, SENTENCES)
    s = similarities(e)
    print(f"sentence embeddings {list(e.shape)}; cosine similarities:")
    print(f"  '{SENTENCES[0]}' ~ '{SENTENCES[1]}': {s[0]:.4f}")
    print(f"  '{SENTENCES[0]}' ~ '{SENTENCES[2]}': {s[1]:.4f}")
    print(f"  '{SENTENCES[1]}' ~ '{SENTENCES[2]}': {s[2]:.4f}")


def check(args):
    c = client(args)
    x, y = digits(args.models, 450)
    logits = infer_digits(c, x)
    single = infer_digits(c, x[:1])
    meta = {m: c.get_model_metadata(m) for m in ("digits", "minilm")}
    report = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": {m: c.is_model_ready(m) for m in meta},
        "metadata": {
            m: {
                "versions": list(v.versions),
                "platform": v.platform,
                "inputs": [[i.name, i.datatype, list(i.shape)] for i in v.inputs],
                "outputs": [[o.name, o.datatype, list(o.shape)] for o in v.outputs],
            }
            for m, v in meta.items()
        },
        "digits_accuracy": float((np.argmax(logits, axis=1) == y).mean() * 100),
        "digits_single_matches_batch": bool(np.allclose(single[0], logits[0], atol=1e-4)),
        "minilm_similarities": similarities(embed(c, SENTENCES)),
    }
    print(json.dumps(report))


def call(args):
    try:
        c = client(args)
        if args.rpc == "live":
            c.is_server_live()
        elif args.rpc == "ready":
            c.is_server_ready()
        elif args.rpc == "metadata":
            c.get_model_metadata(args.model or "digits")
        elif args.rpc == "infer":
            infer_digits(c, np.zeros((1, 64), dtype=np.float32))
        else:
            raise SystemExit(f"unknown rpc {args.rpc}")
        print(json.dumps({"ok": True, "code": "OK", "message": ""}))
    except InferenceServerException as e:
        print(json.dumps({"ok": False, "code": code_of(e), "message": e.message()}))


def flood(args):
    c = client(args)
    x = np.zeros((1, 64), dtype=np.float32)
    _DIGITS_SHAPE[id(c)] = [-1, 1, 8, 8] if args.cnn else [-1, 64]
    counts = {}
    for _ in range(args.count):
        try:
            infer_digits(c, x)
            code = "OK"
        except InferenceServerException as e:
            code = code_of(e)
            counts.setdefault("messages", {})[code] = e.message()
        counts[code] = counts.get(code, 0) + 1
    print(json.dumps(counts))


def infer_text(args):
    try:
        c = client(args)
        texts = args.texts * args.repeat
        if args.announce:
            c.is_server_live()  # connected and authorized: the next call goes straight out
            print("sending", flush=True)
        e = embed(c, texts)
        print(json.dumps({"ok": True, "code": "OK", "shape": list(e.shape)}))
    except InferenceServerException as e:
        print(json.dumps({"ok": False, "code": code_of(e), "message": e.message()}))


def raw(args):
    """A request tritonclient's helpers would refuse to build: any shape, any byte count."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    certs = Path(args.certs)
    creds = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(), (certs / "key.pem").read_bytes(), (certs / "cert.pem").read_bytes()
    )
    channel = grpc.secure_channel(args.url, creds, options=[("grpc.max_send_message_length", -1),
                                                            ("grpc.max_receive_message_length", -1)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name=args.model)
    tensor = request.inputs.add()
    tensor.name = args.input
    tensor.datatype = args.datatype
    tensor.shape.extend(int(d) for d in args.shape.split(",") if d)
    fill = bytes.fromhex(args.fill) if args.fill else b"\0"
    request.raw_input_contents.append((fill * (args.nbytes // len(fill) + 1))[: args.nbytes])
    try:
        stub.ModelInfer(request, timeout=60)
        print(json.dumps({"ok": True, "code": "OK", "message": ""}))
    except grpc.RpcError as e:
        print(json.dumps({"ok": False, "code": e.code().name, "message": e.details()}))


def one_call(c, rpc):
    try:
        if rpc == "live":
            c.is_server_live()
        else:
            infer_digits(c, np.zeros((1, 64), dtype=np.float32))
        return {"ok": True, "code": "OK", "message": ""}
    except InferenceServerException as e:
        return {"ok": False, "code": code_of(e), "message": e.message()}


def call_twice(args):
    c = client(args)
    first = one_call(c, args.rpc)
    print(json.dumps({"first": first}), flush=True)
    sys.stdin.readline()
    print(json.dumps({"first": first, "second": one_call(c, args.rpc)}))


def tls_context(args):
    import ssl

    certs = Path(args.certs)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    ctx.set_alpn_protocols(["h2"])
    return ctx


def tls_connect(args):
    import socket

    host, port = args.url.rsplit(":", 1)
    raw_socket = socket.create_connection((host, int(port)), timeout=10)
    return tls_context(args).wrap_socket(raw_socket, server_hostname=host)


def tls_garbage(args):
    import os

    s = tls_connect(args)
    closed = False
    try:
        # The server may close before it has read everything: that is the
        # verdict, not a client failure.
        s.sendall(os.urandom(args.nbytes))
        while True:
            if not s.recv(65536):
                closed = True
                break
    except OSError:
        closed = True
    print(json.dumps({"closed_by_server": closed}))


def idle(args):
    import time

    sessions = []
    for _ in range(args.count):
        sessions.append(tls_connect(args))
    time.sleep(args.seconds)
    still_open = 0
    for s in sessions:
        s.setblocking(False)
        try:
            # Reading would block on a healthy idle session; b"" or an error means closed.
            data = s.recv(1)
            still_open += 1 if data else 0
        except (BlockingIOError, __import__("ssl").SSLWantReadError):
            still_open += 1
        except OSError:
            pass
    print(json.dumps({"opened": len(sessions), "still_open": still_open}))


def probe(args):
    import threading
    import time

    stop = threading.Event()
    latencies, failures = [], []

    def loop():
        c = client(args)
        while not stop.is_set():
            started = time.monotonic()
            try:
                c.is_server_live(client_timeout=10)
            except InferenceServerException as e:
                failures.append(code_of(e))
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    print("probing", flush=True)
    sys.stdin.readline()
    stop.set()
    t.join(timeout=15)
    latencies.sort()
    print(json.dumps({
        "calls": len(latencies),
        "failures": failures,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }))


def status(args):
    c = client(args)
    print(json.dumps({"live": c.is_server_live(), "ready": c.is_server_ready()}))


def grpc_channel(args):
    """A raw grpcio channel over mutual TLS, for calls tritonclient does not make."""
    import grpc

    certs = Path(args.certs)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "key.pem").read_bytes(),
        certificate_chain=(certs / "cert.pem").read_bytes(),
    )
    return grpc.secure_channel(args.url, creds, options=[("grpc.ssl_target_name_override", "localhost")])


def health(args):
    import grpc

    channel = grpc_channel(args)
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    name = args.service.encode()
    request = (b"\x0a" + bytes([len(name)]) + name) if name else b""
    try:
        reply = check(request, timeout=10)
        # HealthCheckResponse: field 1 (status) as a varint.
        value = reply[1] if len(reply) >= 2 and reply[0] == 0x08 else 0
        names = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
        print(json.dumps({"ok": True, "code": "OK", "message": "", "status": names.get(value, str(value))}))
    except grpc.RpcError as e:
        print(json.dumps({"ok": False, "code": e.code().name, "message": e.details(), "status": None}))


def watch(args):
    import threading

    import grpc

    channel = grpc_channel(args)
    stream = channel.unary_stream("/grpc.health.v1.Health/Watch")(b"")
    statuses = []
    timer = threading.Timer(args.seconds, stream.cancel)
    timer.start()
    code = "OK"
    try:
        for reply in stream:
            statuses.append(reply[1] if len(reply) >= 2 and reply[0] == 0x08 else 0)
    except grpc.RpcError as e:
        code = e.code().name
    timer.cancel()
    print(json.dumps({"messages": len(statuses), "statuses": statuses, "code": code}))


def load(args):
    import threading
    import time

    stop = threading.Event()
    lock = threading.Lock()
    totals = {"requests": 0, "errors": {}, "versions": {}, "messages": {}}
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)

    def worker():
        c = client(args)
        inp = grpcclient.InferInput("input", [1, 1, 8, 8], "FP32")
        inp.set_data_from_numpy(x)
        while not stop.is_set():
            try:
                result = c.infer("digits", [inp])
                version = result.get_response().model_version
                now = time.time()
                with lock:
                    totals["requests"] += 1
                    v = totals["versions"].setdefault(version, {"count": 0, "first": now, "last": now})
                    v["count"] += 1
                    v["last"] = now
            except InferenceServerException as e:
                with lock:
                    totals["requests"] += 1
                    code = code_of(e)
                    totals["errors"][code] = totals["errors"].get(code, 0) + 1
                    totals["messages"][code] = e.message()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    print("running", flush=True)
    sys.stdin.readline()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    print(json.dumps(totals))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--certs", required=True)
    p.add_argument("--no-client-cert", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo")
    d.add_argument("models")
    k = sub.add_parser("check")
    k.add_argument("models")
    cl = sub.add_parser("classify")
    cl.add_argument("models")
    cl.add_argument("k", type=int)
    r = sub.add_parser("call")
    r.add_argument("rpc")
    r.add_argument("model", nargs="?")
    f = sub.add_parser("flood")
    f.add_argument("count", type=int)
    f.add_argument("--mlp", dest="cnn", action="store_false", help="digits is an MLP ([N, 64])")
    t = sub.add_parser("infer-text")
    t.add_argument("texts", nargs="+")
    t.add_argument("--repeat", type=int, default=1, help="send the texts this many times over")
    t.add_argument("--announce", action="store_true", help="print 'sending' just before the call")
    w = sub.add_parser("raw")
    w.add_argument("model")
    w.add_argument("input")
    w.add_argument("datatype")
    w.add_argument("shape", help="comma-separated dimensions")
    w.add_argument("nbytes", type=int)
    w.add_argument("--fill", help="hex bytes repeated to fill the data")
    ct = sub.add_parser("call-twice")
    ct.add_argument("rpc")
    g = sub.add_parser("tls-garbage")
    g.add_argument("nbytes", type=int)
    sub.add_parser("status")
    sub.add_parser("probe")
    he = sub.add_parser("health")
    he.add_argument("service")
    wa = sub.add_parser("watch")
    wa.add_argument("seconds", type=float)
    lo = sub.add_parser("load")
    lo.add_argument("threads", type=int)
    i = sub.add_parser("idle")
    i.add_argument("count", type=int)
    i.add_argument("seconds", type=float)
    args = p.parse_args()
    commands = {"call-twice": call_twice, "tls-garbage": tls_garbage, "idle": idle, "demo": demo, "check": check, "classify": classify, "call": call, "flood": flood, "infer-text": infer_text, "raw": raw, "load": load, "status": status, "health": health, "probe": probe, "watch": watch}
    commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
