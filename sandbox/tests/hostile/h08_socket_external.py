"""Reach the internet: DNS, a public resolver, an HTTP request."""

import socket  # HOSTILE
import urllib.request

for target in [("1.1.1.1", 53), ("8.8.8.8", 443)]:
    try:
        socket.create_connection(target, timeout=2)
        print("CONNECTED external", target)
    except OSError as error:
        print("no route", target, error)
try:
    print("CONNECTED http", urllib.request.urlopen("http://pypi.org", timeout=2).status)
except Exception as error:
    print("no http", error)
