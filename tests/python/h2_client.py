"""An HTTP/2 client that writes frames itself (python `h2`), over mutual TLS, for the daemon's
connection tests: what a well-formed but idle or stalling client does to the server.

Usage: h2_client.py --url HOST:PORT --certs DIR COMMAND ...
  idle-pings SECONDS INTERVAL   open a connection, send no request, PING every INTERVAL
                                seconds for at most SECONDS; JSON {closed_after, goaway}
  hold-stream SECONDS           open one request stream (headers, no body, never ended),
                                print "holding", wait at most SECONDS for the server to close
                                the connection; JSON {closed_after, goaway}
  flood KIND COUNT              send COUNT abusive frames of KIND as fast as possible, reading
                                (and discarding) what comes back: ping, settings, empty-data,
                                reset (open a stream and reset it at once: "rapid reset"),
                                continuation (one HEADERS without END_HEADERS, then CONTINUATION
                                frames); JSON {sent, closed_after, goaway, error_code, seconds}
  bomb COUNT                    an HPACK bomb: one 4 KiB header into the dynamic table, then
                                a HEADERS block that references it COUNT times (one byte each);
                                JSON {closed_after, goaway, error_code, reset, wire_bytes}
  streams COUNT                 open COUNT request streams at once (headers, no body);
                                JSON {opened, refused, closed_after, goaway}
  stall MODEL NBYTES            advertise a zero receive window, send one ModelInfer for MODEL
                                (input "input", FP32, NBYTES of zeros, shape [NBYTES/256,1,8,8])
                                and never let the answer in; JSON {sent, headers, closed_after}
closed_after is the seconds until the server closed the connection (GOAWAY or EOF), null if
it stayed open.
"""

import argparse
import json
import select
import socket
import ssl
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def connect(args, initial_window=None):
    certs = Path(args.certs)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    ctx.set_alpn_protocols(["h2"])
    host, port = args.url.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    if initial_window is not None:
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    return tls, conn


def pump(tls, conn, wait):
    """Reads what arrives within `wait` seconds; returns 'goaway', 'closed' or None."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([tls], [], [], left)
        if not ready:
            return None
        try:
            data = tls.recv(65536)
        except (ssl.SSLError, OSError):
            return "closed"
        if not data:
            return "closed"
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # Frames after the server's GOAWAY (h2 has closed its side).
            return "goaway" if conn.state_machine.state == h2.connection.ConnectionState.CLOSED else "closed"
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return "goaway"
        pending = conn.data_to_send()
        if pending:
            try:
                tls.sendall(pending)
            except OSError:
                return "closed"


def idle_pings(args):
    tls, conn = connect(args)
    started = time.monotonic()
    outcome = None
    while time.monotonic() - started < args.seconds and outcome is None:
        try:
            conn.ping(b"keepwarm")
            tls.sendall(conn.data_to_send())
        except OSError:
            outcome = "closed"
            break
        outcome = pump(tls, conn, args.interval)
    closed = None if outcome is None else round(time.monotonic() - started, 2)
    print(json.dumps({"closed_after": closed, "goaway": outcome == "goaway"}))


def hold_stream(args):
    tls, conn = connect(args)
    pump(tls, conn, 0.2)
    conn.send_headers(1, [
        (":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
        (":path", "/inference.GRPCInferenceService/ServerLive"),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ])
    tls.sendall(conn.data_to_send())
    print("holding", flush=True)
    started = time.monotonic()
    outcome = None
    while outcome is None and time.monotonic() - started < args.seconds:
        outcome = pump(tls, conn, 0.2)
        if outcome == "goaway":
            # A graceful GOAWAY still lets the open stream finish; wait for the close.
            outcome = None if pump(tls, conn, args.seconds) is None else "closed"
            if outcome is None:
                break
    closed = None if outcome is None else round(time.monotonic() - started, 2)
    print(json.dumps({"closed_after": closed, "goaway": False}))


GRPC_HEADERS = [
    (":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
    (":path", "/inference.GRPCInferenceService/ServerLive"),
    ("content-type", "application/grpc"), ("te", "trailers"),
]


class Watch:
    """Reads whatever the server sends, without blocking, and notes how it ends."""

    def __init__(self, tls):
        self.tls = tls
        self.buffer = b""
        self.outcome = None
        self.error_code = None
        self.resets = {}

    def drain(self, wait=0.0):
        while self.outcome is None:
            ready, _, _ = select.select([self.tls], [], [], wait)
            if not ready and not self.tls.pending():
                return
            try:
                data = self.tls.recv(65536)
            except ssl.SSLWantReadError:
                return
            except (OSError, ssl.SSLError):
                self.outcome = "closed"
                return
            if not data:
                self.outcome = "closed"
                return
            self.buffer += data
            # Whole frames: note GOAWAY (type 7) and RST_STREAM (type 3).
            while len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) < 9 + length:
                    break
                kind = self.buffer[3]
                stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
                payload = self.buffer[9:9 + length]
                if kind == 7 and length >= 8:
                    self.outcome = "goaway"
                    self.error_code = int.from_bytes(payload[4:8], "big")
                elif kind == 3 and length == 4:
                    self.resets[stream] = int.from_bytes(payload, "big")
                self.buffer = self.buffer[9 + length:]

    def wait(self, seconds):
        deadline = time.monotonic() + seconds
        while self.outcome is None and time.monotonic() < deadline:
            self.drain(0.1)


def raw_connect(args):
    """TLS plus the client preface and an empty SETTINGS frame, nothing else."""
    import hyperframe.frame as hf

    certs = Path(args.certs)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    ctx.set_alpn_protocols(["h2"])
    host, port = args.url.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize())
    tls.setblocking(False)
    return tls


def raw_open(args):
    """A raw connection and its watcher, after the server's first frames."""
    tls = raw_connect(args)
    watch = Watch(tls)
    watch.wait(0.2)
    return tls, watch


def send(tls, watch, data):
    """Writes all of `data`, reading meanwhile so the server never blocks on us."""
    view = memoryview(data)
    while view and watch.outcome is None:
        try:
            n = tls.send(view)
            view = view[n:]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            select.select([tls], [tls], [], 0.1)
        except (OSError, ssl.SSLError):
            watch.outcome = "closed"
            return
        watch.drain()


def report(watch, started, **extra):
    closed = None if watch.outcome is None else round(time.monotonic() - started, 3)
    print(json.dumps({"closed_after": closed, "goaway": watch.outcome == "goaway",
                      "error_code": watch.error_code, **extra}))


def flood(args):
    import hpack
    import hyperframe.frame as hf

    tls, watch = raw_open(args)
    encoder = hpack.Encoder()
    started = time.monotonic()
    sent = 0
    if args.kind == "continuation":
        first = hf.HeadersFrame(1)
        first.data = encoder.encode(GRPC_HEADERS)
        send(tls, watch, first.serialize())
        piece = hf.ContinuationFrame(1)
        piece.data = b"\x00" * 1024
        wire = piece.serialize()
    elif args.kind == "empty-data":
        h = hf.HeadersFrame(1)
        h.data = encoder.encode(GRPC_HEADERS)
        h.flags.add("END_HEADERS")
        send(tls, watch, h.serialize())
        wire = hf.DataFrame(1).serialize()
    for i in range(args.count):
        if watch.outcome is not None:
            break
        if args.kind == "ping":
            frame = hf.PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize()
        elif args.kind == "settings":
            f = hf.SettingsFrame(0)
            f.settings = {hf.SettingsFrame.INITIAL_WINDOW_SIZE: 65535 + (i % 2)}
            frame = f.serialize()
        elif args.kind == "reset":
            stream = 1 + 2 * i
            h = hf.HeadersFrame(stream)
            h.data = encoder.encode(GRPC_HEADERS)
            h.flags.add("END_HEADERS")
            r = hf.RstStreamFrame(stream)
            r.error_code = 8  # CANCEL
            frame = h.serialize() + r.serialize()
        else:
            frame = wire
        send(tls, watch, frame)
        sent += 1
    watch.wait(args.wait)
    report(watch, started, sent=sent, seconds=round(time.monotonic() - started, 3))


def bomb(args):
    import hyperframe.frame as hf

    import hpack

    tls, watch = raw_open(args)
    block = hpack.Encoder().encode(GRPC_HEADERS)
    # Literal with incremental indexing, new name: 0x40, name, value (7-bit
    # prefixed lengths, no Huffman); then the new entry (index 62) by index.
    name, value = b"x-bomb", b"b" * 4000
    block += b"\x40" + bytes([len(name)]) + name + b"\x7f" + varint(len(value) - 127) + value
    block += b"\xbe" * args.count
    started = time.monotonic()
    # Split over HEADERS + CONTINUATION frames of at most 16 KiB.
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    frames = b""
    for n, chunk in enumerate(chunks):
        f = hf.HeadersFrame(1) if n == 0 else hf.ContinuationFrame(1)
        f.data = chunk
        if n == len(chunks) - 1:
            f.flags.add("END_HEADERS")
        if n == 0:
            f.flags.add("END_STREAM")
        frames += f.serialize()
    send(tls, watch, frames)
    watch.wait(args.wait)
    report(watch, started, reset=watch.resets.get(1), wire_bytes=len(frames))


def varint(n):
    out = b""
    while n >= 128:
        out += bytes([(n % 128) + 128])
        n //= 128
    return out + bytes([n])


def streams(args):
    import hpack
    import hyperframe.frame as hf

    tls, watch = raw_open(args)
    encoder = hpack.Encoder()
    started = time.monotonic()
    for i in range(args.count):
        h = hf.HeadersFrame(1 + 2 * i)
        h.data = encoder.encode(GRPC_HEADERS)
        h.flags.add("END_HEADERS")
        send(tls, watch, h.serialize())
    watch.wait(args.wait)
    refused = sum(1 for code in watch.resets.values() if code == 7)
    report(watch, started, opened=args.count, refused=refused)


def stall(args):
    from tritonclient.grpc import service_pb2

    tls, conn = connect(args, initial_window=0)
    pump(tls, conn, 0.3)
    n = max(1, args.nbytes // 256)
    request = service_pb2.ModelInferRequest(model_name=args.model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend([n, 1, 8, 8])
    request.raw_input_contents.append(bytes(n * 256))
    message = request.SerializeToString()
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    headers = [h if h[0] != ":path" else (":path", "/inference.GRPCInferenceService/ModelInfer")
               for h in GRPC_HEADERS]
    conn.send_headers(1, headers)
    tls.sendall(conn.data_to_send())
    sent = 0
    got_headers = False
    outcome = None
    while sent < len(body) and outcome is None:
        window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
        if window > 0:
            chunk = body[sent:sent + window]
            sent += len(chunk)
            conn.send_data(1, chunk, end_stream=sent == len(body))
            tls.sendall(conn.data_to_send())
        else:
            outcome = pump(tls, conn, 0.5)
    started = time.monotonic()
    # Now never acknowledge data: the stream's window stays at zero. Keep
    # reading frames so a close is seen (h2 does not widen windows by itself).
    while outcome is None and time.monotonic() - started < args.wait:
        ready, _, _ = select.select([tls], [], [], 0.2)
        if not ready:
            continue
        try:
            data = tls.recv(65536)
        except (ssl.SSLError, OSError):
            outcome = "closed"
            break
        if not data:
            outcome = "closed"
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            outcome = "closed"
            break
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                got_headers = True
            if isinstance(event, h2.events.ConnectionTerminated):
                outcome = "goaway"
        pending = conn.data_to_send()
        if pending:
            tls.sendall(pending)
    closed = None if outcome is None else round(time.monotonic() - started, 3)
    print(json.dumps({"sent": sent, "headers": got_headers, "closed_after": closed}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--certs", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("idle-pings")
    i.add_argument("seconds", type=float)
    i.add_argument("interval", type=float)
    h = sub.add_parser("hold-stream")
    h.add_argument("seconds", type=float)
    f = sub.add_parser("flood")
    f.add_argument("kind", choices=["ping", "settings", "empty-data", "reset", "continuation"])
    f.add_argument("count", type=int)
    b = sub.add_parser("bomb")
    b.add_argument("count", type=int)
    s = sub.add_parser("streams")
    s.add_argument("count", type=int)
    st = sub.add_parser("stall")
    st.add_argument("model")
    st.add_argument("nbytes", type=int)
    for q in (f, b, s, st):
        q.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the server's verdict")
    args = p.parse_args()
    commands = {"idle-pings": idle_pings, "hold-stream": hold_stream, "flood": flood, "bomb": bomb,
                "streams": streams, "stall": stall}
    commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
