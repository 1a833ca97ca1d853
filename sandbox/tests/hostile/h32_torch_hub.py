"""Download and run code with torch.hub."""

import torch

model = torch.hub.load("pytorch/vision", "resnet18")  # HOSTILE
print("DOWNLOADED", model)
