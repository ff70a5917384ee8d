#!/usr/bin/env python3
"""hold-connections.py -- open many keep-alive connections to a proxy, send one request on
each, read its whole answer, then hold them all open and idle.

    bench/hold-connections.py PORT COUNT HOLD_SECONDS [--tls]

Prints `ready N` once every answer has arrived (N connections answered 200), holds them for
HOLD_SECONDS, closes them and exits. A proxy's resident set read while they are held is what
COUNT idle client connections cost it. With --tls, each connection is TLS (HTTP/1.1, the
certificate not checked). Loopback only; bounded by COUNT and HOLD_SECONDS.
"""
import socket
import ssl
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hold-connections\r\n\r\n"


def answer_complete(data: bytes) -> bool:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    for line in data[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(data) - head_end - 4 >= int(value)
    return False


def main() -> None:
    port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    tls = None
    if "--tls" in sys.argv[4:]:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 120
    conns = []
    answered = 0
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            s = tls.wrap_socket(s, server_hostname="localhost")
        s.sendall(REQUEST)
        data = b""
        while not answer_complete(data) and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        answered += data.startswith(b"HTTP/1.1 200")
        conns.append(s)
    print(f"ready {answered}", flush=True)
    time.sleep(hold)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
