"""Connect to the local PostgreSQL over TCP and speak its protocol."""

import socket  # HOSTILE

s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", 5432))
    s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
    print("CONNECTED postgres", s.recv(10))
except OSError as error:
    print("no postgres", error)
