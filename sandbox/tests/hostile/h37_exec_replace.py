"""Replace the process with a shell through os.execv, keeping the events pipe."""

import os  # HOSTILE

os.execv(
    "/bin/sh",
    [
        "sh",
        "-c",
        'env; echo pwned > ../escaped.txt; echo \'{"kind": "result"}\' >&$BUILDX_EVENTS_FD; ls /proc',
    ],
)
