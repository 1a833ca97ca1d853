"""Call libc's system() through ctypes."""

import ctypes  # HOSTILE

libc = ctypes.CDLL(None)
libc.system(b"env; echo pwned > ../escaped.txt; echo pwned > /tmp/buildx-escape.txt")
