"""An HTTP/2 client that writes frames itself (python `h2`), over mutual TLS, for the daemon's
connection tests: what a well-formed but idle or stalling client does to the server.

Usage: h2_client.py --url HOST:PORT --certs DIR COMMAND ...
  idle-pings SECONDS INTERVAL   open a connection, send no request, PING every INTERVAL
                                seconds for at most SECONDS; JSON {closed_after, goaway}
  hold-stream SECONDS           open one request stream (headers, no body, never ended),
                                print "holding", wait at most SECONDS for the server to close
                                the connection; JSON {closed_after, goaway}
  flood KIND COUNT               send COUNT abusive frames of KIND as fast as possible, reading
                                nothing back: ping, settings, reset (open a stream and reset it
                                at once: "rapid reset"), continuation (one HEADERS without
                                END_HEADERS, then CONTINUATION frames); JSON {sent, closed_after,
                                goaway, error_code, seconds}
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


def connect(args):
    certs = Path(args.certs)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    ctx.set_alpn_protocols(["h2"])
    host, port = args.url.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
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


def flood(args):
    import hyperframe.frame as hf

    tls, conn = connect(args)
    pump(tls, conn, 0.2)
    started = time.monotonic()
    sent = 0
    outcome = None
    error_code = None
    headers = [
        (":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
        (":path", "/inference.GRPCInferenceService/ServerLive"),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ]
    try:
        if args.kind == "continuation":
            # Raw frames: h2 would refuse to write this itself.
            block = conn.encoder.encode(headers)
            first = hf.HeadersFrame(1)
            first.data = block
            tls.sendall(first.serialize())
            piece = hf.ContinuationFrame(1)
            piece.data = b"\x00" * 1024
            wire = piece.serialize()
        for i in range(args.count):
            if args.kind == "ping":
                tls.sendall(hf.PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize())
            elif args.kind == "settings":
                f = hf.SettingsFrame(0)
                f.settings = {hf.SettingsFrame.INITIAL_WINDOW_SIZE: 65535 + (i % 2)}
                tls.sendall(f.serialize())
            elif args.kind == "reset":
                stream = 1 + 2 * i
                h = hf.HeadersFrame(stream)
                h.data = conn.encoder.encode(headers)
                h.flags.add("END_HEADERS")
                r = hf.RstStreamFrame(stream)
                r.error_code = 8  # CANCEL
                tls.sendall(h.serialize() + r.serialize())
            elif args.kind == "continuation":
                tls.sendall(wire)
            else:
                raise SystemExit(f"unknown flood {args.kind}")
            sent += 1
    except (OSError, ssl.SSLError):
        outcome = "closed"
    if outcome is None:
        # Now read: did the server give up on us, and how?
        deadline = time.monotonic() + args.wait
        buffer = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([tls], [], [], 0.2)
            if not ready:
                continue
            try:
                data = tls.recv(65536)
            except (OSError, ssl.SSLError):
                outcome = "closed"
                break
            if not data:
                outcome = "closed"
                break
            buffer += data
            # Scan whole frames for a GOAWAY (type 7).
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                if buffer[3] == 7 and length >= 8:
                    outcome = "goaway"
                    error_code = int.from_bytes(buffer[13:17], "big")
                buffer = buffer[9 + length:]
            if outcome:
                break
    closed = None if outcome is None else round(time.monotonic() - started, 3)
    print(json.dumps({"sent": sent, "closed_after": closed, "goaway": outcome == "goaway",
                      "error_code": error_code, "seconds": round(time.monotonic() - started, 3)}))


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
    f.add_argument("kind", choices=["ping", "settings", "reset", "continuation"])
    f.add_argument("count", type=int)
    f.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the server's verdict")
    args = p.parse_args()
    {"idle-pings": idle_pings, "hold-stream": hold_stream, "flood": flood}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
