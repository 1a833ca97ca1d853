"""Connect to the test's canary listener on every address of the host (hostile.json names them)."""

import json
import socket  # HOSTILE

config = json.load(open("hostile.json"))
for host in config["canary_hosts"]:
    try:
        socket.create_connection((host, config["canary_port"]), timeout=2).sendall(b"hello")
        print("CONNECTED canary", host)
    except OSError as error:
        print("no canary", host, error)
