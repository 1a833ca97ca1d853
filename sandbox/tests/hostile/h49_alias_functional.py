"""Hide os behind an alias of an allowed module: the static check used to follow attribute chains
from imported names only, and `G.torch.os` starts at a variable."""

import torch

G = torch.nn.functional
G.torch.os.system("env; echo pwned > ../escaped.txt; echo pwned > /tmp/buildx-escape.txt")  # HOSTILE
