"""Connect to the local Redis and ask for its keys."""

import socket  # HOSTILE

for host in ["127.0.0.1", "localhost", "::1"]:
    try:
        s = socket.create_connection((host, 6379), timeout=2)
        s.sendall(b"KEYS *\r\n")
        print("CONNECTED redis", s.recv(100))
    except OSError as error:
        print("no redis", host, error)
