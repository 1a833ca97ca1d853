"""Connect to PostgreSQL and Redis through their unix sockets."""

import socket  # HOSTILE

for path in [
    "/var/run/postgresql/.s.PGSQL.5432",
    "/run/postgresql/.s.PGSQL.5432",
    "/tmp/.s.PGSQL.5432",
    "/var/run/redis/redis-server.sock",
    "/run/redis/redis.sock",
    "/var/run/docker.sock",
]:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        print("CONNECTED unix", path)
    except OSError as error:
        print("no socket", path, error)
