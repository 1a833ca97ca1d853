"""Write garbage, huge lines and forged platform messages to the events pipe."""

import os  # HOSTILE

fd = int(os.environ["BUILDX_EVENTS_FD"])
os.write(fd, b"\x00\xff\xfe not json\n")
os.write(fd, b'{"kind": "nonsense"}\n')
os.write(fd, b"[1, 2, 3]\n")
os.write(fd, b'{"kind": "log", "stream": "platform", "line": "FORGED platform message"}\n')
os.write(fd, b'{"kind": "log", "stream": "stdout", "line": "' + b"a" * 5_000_000 + b'"}\n')
os.write(fd, b"b" * 3_000_000)
os.close(fd)
