#!/usr/bin/env python3
"""RSS per connection of a running Herald, for connections that are not streams.

    scripts/connection-rss.py PID PORT [COUNT]

Opens COUNT (5000) connections that send one `GET /healthz` and stay open (idle keep-alive), then
COUNT that send nothing, and prints the server's RSS growth per connection for each: what an HTTP
connection costs before a stream adds anything (herald-load --connections-only gives the streams'
figure). Needs COUNT * 2 descriptors here and there.
"""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    held = []

    before = rss_kib(pid)
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(connection)
    for connection in held:
        connection.recv(4096)
    time.sleep(2)
    print(f"{count} idle keep-alive connections (one /healthz each): {(rss_kib(pid) - before) / count:.1f} KiB each")

    before = rss_kib(pid)
    for _ in range(count):
        held.append(socket.create_connection(("127.0.0.1", port)))
    time.sleep(2)
    print(f"{count} connections that sent nothing: {(rss_kib(pid) - before) / count:.1f} KiB each")


if __name__ == "__main__":
    main()
