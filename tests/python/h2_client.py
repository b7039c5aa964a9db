"""An HTTP/2 client that writes frames itself (python `h2`), over mutual TLS, for the daemon's
connection tests: what a well-formed but idle or stalling client does to the server.

Usage: h2_client.py --url HOST:PORT --certs DIR COMMAND ...
  idle-pings SECONDS INTERVAL   open a connection, send no request, PING every INTERVAL
                                seconds for at most SECONDS; JSON {closed_after, goaway}
  hold-stream SECONDS           open one request stream (headers, no body, never ended),
                                print "holding", wait at most SECONDS for the server to close
                                the connection; JSON {closed_after, goaway}
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
    args = p.parse_args()
    {"idle-pings": idle_pings, "hold-stream": hold_stream}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
