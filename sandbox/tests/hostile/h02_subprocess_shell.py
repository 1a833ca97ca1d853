"""Start a shell through subprocess and look for the worker's secrets everywhere."""

import subprocess  # HOSTILE

out = subprocess.run(
    "env; cat /proc/1/environ; ls -la /work /root; cat /work/main/.env",
    shell=True,
    capture_output=True,
    text=True,
)
print(out.stdout, out.stderr)
with open("../escaped.txt", "w") as f:
    f.write(out.stdout)
