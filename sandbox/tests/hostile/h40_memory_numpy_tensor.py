"""Ask torch for a tensor far larger than memory."""

import torch

x = torch.empty(50_000_000_000, dtype=torch.uint8)
x.fill_(1)
print("ALLOCATED", x.sum())
