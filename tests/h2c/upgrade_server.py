#!/usr/bin/python3
"""An HTTP/1.1 server that switches to HTTP/2 on `Upgrade: h2c` (RFC 7540
§3.2), with the `h2` library (python3-h2): files of `--root` served by
GET, on the upgraded stream 1 and on the streams the client opens after.
A request without the upgrade gets 426. Prints "ready" when listening.
Run it with Debian's /usr/bin/python3.
"""

import argparse
import os
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def respond(conn, stream, root, path, pending):
    name = os.path.normpath(path.split("?", 1)[0]).lstrip("/")
    full = os.path.join(root, name)
    if name and os.path.isfile(full):
        with open(full, "rb") as f:
            body = f.read()
        status = "200"
    else:
        body, status = b"not found\n", "404"
    conn.send_headers(stream, [(":status", status), ("content-length", str(len(body))),
                               ("content-type", "text/plain")])
    pending[stream] = body
    flush(conn, pending)


def flush(conn, pending):
    """Sends what flow control allows of each pending body, in frames of
    at most the peer's maximum size; a body sent whole ends its stream."""
    for stream in list(pending):
        body = pending[stream]
        while True:
            n = min(len(body), conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
            if n == 0 and body:
                break
            conn.send_data(stream, body[:n], end_stream=n == len(body))
            body = body[n:]
            if not body:
                del pending[stream]
                break
        if stream in pending:
            pending[stream] = body


def serve(sock, root):
    with sock:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                return
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        fields = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        if fields.get("upgrade", "").lower() != "h2c" or "http2-settings" not in fields:
            sock.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_upgrade_connection(fields["http2-settings"])
        pending = {}
        respond(conn, 1, root, path, pending)
        sock.sendall(conn.data_to_send())
        data = rest
        while True:
            if data:
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict((k.decode(), v.decode()) if isinstance(k, bytes) else (k, v)
                                       for k, v in event.headers)
                        respond(conn, event.stream_id, root, headers.get(":path", "/"), pending)
                    elif isinstance(event, h2.events.WindowUpdated):
                        flush(conn, pending)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
            data = sock.recv(65536)
            if not data:
                return


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    args = p.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=serve, args=(sock, args.root), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
