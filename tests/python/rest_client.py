"""The stock Triton HTTP client (`tritonclient.http`) against the appliance's REST form, over
mutual TLS (HTTP/1.1, as that client speaks it).

Used by the end-to-end tests; each command prints one JSON object. Nothing here is specific to
the appliance: it is what an app written against Triton's HTTP client does, with the address
and the three certificate files changed.

Usage: rest_client.py --url localhost:PORT --certs DIR COMMAND ...
  DIR holds ca.pem, cert.pem and key.pem as `provision client issue` writes them.
Commands:
  check MODELS_DIR     live, ready, server and model metadata, 20 digits as JSON and as binary
                       tensors (logits and accuracy), their top 3 through class_count, and three
                       sentences through minilm (BYTES in, embeddings out); JSON
  call ENDPOINT        one call (live|ready|metadata|model-ready|infer), JSON {ok, status, message}
  stats MODEL          the model's configuration and statistics through both stock clients:
                       JSON {grpc_config, http_config, grpc_stats, http_stats}
  slow-header SECONDS  a TLS session (ALPN http/1.1) that sends half a request header and then
                       nothing; JSON {closed_by_server, after_s, answer} (what the server sent)
  latency MODELS_DIR N N single-digit inferences through the HTTP client (binary tensors, one
                       connection) and then N through the gRPC client; JSON {rest_p50_ms,
                       grpc_p50_ms, rest_p90_ms, grpc_p90_ms}
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


def client(args):
    certs = Path(args.certs)
    return httpclient.InferenceServerClient(
        url=args.url,
        ssl=True,
        ssl_options={
            "ca_certs": str(certs / "ca.pem"),
            "certfile": str(certs / "cert.pem"),
            "keyfile": str(certs / "key.pem"),
        },
    )


def grpc_client(args):
    certs = Path(args.certs)
    return grpcclient.InferenceServerClient(
        url=args.url,
        ssl=True,
        root_certificates=str(certs / "ca.pem"),
        private_key=str(certs / "key.pem"),
        certificate_chain=str(certs / "cert.pem"),
    )


def digits(models_dir, n):
    x = np.fromfile(Path(models_dir) / "digits_test_x.f32", dtype="<f4").reshape(-1, 64)[:n]
    y = np.fromfile(Path(models_dir) / "digits_test_y.u8", dtype=np.uint8)[:n]
    return x, y


def shaped(c, x):
    dims = c.get_model_metadata("digits")["inputs"][0]["shape"]
    return x.reshape([x.shape[0]] + [int(d) for d in dims[1:]]).astype(np.float32)


def infer_digits(c, x, binary, class_count=0):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=class_count)
    return c.infer("digits", [inp], outputs=[out]).as_numpy("logits")


def check(args):
    c = client(args)
    x, y = digits(args.models, 20)
    x = shaped(c, x)
    as_json = infer_digits(c, x, binary=False)
    as_binary = infer_digits(c, x, binary=True)
    top = infer_digits(c, x[:5], binary=False, class_count=3)
    text = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object), binary_data=False)
    e = c.infer("minilm", [text]).as_numpy("embeddings")
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    print(json.dumps({
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": c.is_model_ready("digits"),
        "server": c.get_server_metadata(),
        "metadata": c.get_model_metadata("digits"),
        "json_logits": as_json.tolist(),
        "binary_logits": as_binary.tolist(),
        "accuracy": float(np.mean(np.argmax(as_binary, axis=1) == y)),
        "top": [[t.decode() if isinstance(t, bytes) else t for t in row] for row in top],
        "similarities": [float(e[0] @ e[1]), float(e[0] @ e[2])],
        "embedding_shape": list(e.shape),
    }))


def call(args):
    c = client(args)
    try:
        if args.endpoint == "live":
            value = c.is_server_live()
        elif args.endpoint == "ready":
            value = c.is_server_ready()
        elif args.endpoint == "metadata":
            value = c.get_server_metadata()
        elif args.endpoint == "model-ready":
            value = c.is_model_ready("digits")
        elif args.endpoint == "infer":
            x = shaped(c, np.zeros((1, 64), dtype=np.float32))
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            value = c.infer("digits", [inp]).as_numpy("logits").tolist()
        else:
            raise SystemExit(f"unknown endpoint {args.endpoint}")
        print(json.dumps({"ok": True, "value": value}))
    except InferenceServerException as e:
        print(json.dumps({"ok": False, "status": e.status(), "message": e.message()}))


def stats(args):
    from google.protobuf import json_format

    c = client(args)
    g = grpc_client(args)
    as_dict = lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)
    print(json.dumps({
        "grpc_config": as_dict(g.get_model_config(args.model).config),
        "http_config": c.get_model_config(args.model),
        "grpc_stats": as_dict(g.get_inference_statistics(args.model)),
        "http_stats": c.get_inference_statistics(args.model),
    }))


def slow_header(args):
    import socket
    import ssl

    certs = Path(args.certs)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    host, port = args.url.rsplit(":", 1)
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=args.seconds),
                        server_hostname=host)
    start = time.monotonic()
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    answer, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            answer += chunk
    except (socket.timeout, TimeoutError):
        pass
    except OSError:
        closed = True
    print(json.dumps({"closed_by_server": closed, "after_s": time.monotonic() - start,
                      "answer": answer.decode(errors="replace")}))


def latency(args):
    x, _ = digits(args.models, 1)

    def timed(f):
        f()  # connect and warm up outside the figures
        times = []
        for _ in range(args.n):
            t = time.perf_counter()
            f()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        return statistics.median(times), times[int(len(times) * 0.9)]

    c = client(args)
    xr = shaped(c, x)
    inp = httpclient.InferInput("input", list(xr.shape), "FP32")
    inp.set_data_from_numpy(xr, binary_data=True)
    out = httpclient.InferRequestedOutput("logits", binary_data=True)
    rest = timed(lambda: c.infer("digits", [inp], outputs=[out]).as_numpy("logits"))
    g = grpc_client(args)
    ginp = grpcclient.InferInput("input", list(xr.shape), "FP32")
    ginp.set_data_from_numpy(xr)
    gout = grpcclient.InferRequestedOutput("logits")
    grpc = timed(lambda: g.infer("digits", [ginp], outputs=[gout]).as_numpy("logits"))
    print(json.dumps({
        "calls": args.n,
        "rest_p50_ms": rest[0], "rest_p90_ms": rest[1],
        "grpc_p50_ms": grpc[0], "grpc_p90_ms": grpc[1],
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--certs", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("check")
    k.add_argument("models")
    c = sub.add_parser("call")
    c.add_argument("endpoint")
    sh = sub.add_parser("slow-header")
    sh.add_argument("seconds", type=float)
    st = sub.add_parser("stats")
    st.add_argument("model")
    lat = sub.add_parser("latency")
    lat.add_argument("models")
    lat.add_argument("n", type=int)
    args = p.parse_args()
    {"check": check, "call": call, "stats": stats, "slow-header": slow_header,
     "latency": latency}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
