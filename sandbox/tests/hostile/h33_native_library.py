"""Load a native library through torch.ops and call into it."""

import torch

torch.ops.load_library("/usr/lib/x86_64-linux-gnu/libc.so.6")  # HOSTILE
print("LOADED")
