"""More ways to keep a module in a value: tuple unpacking, a function's return value, a list element,
a dict value, an attribute of an object."""

import torch

G, H = torch.nn.functional, torch.optim
G.torch.os.system("echo pwned > ../escaped-tuple.txt")  # HOSTILE


def helper():
    return torch.nn.functional


helper().torch.os.system("echo pwned > ../escaped-call.txt")
[torch.nn.functional][0].torch.os.system("echo pwned > ../escaped-list.txt")
{"f": torch.nn.functional}["f"].torch.os.system("env > ../escaped-dict.txt")


class Holder:
    def __init__(self):
        self.module = torch.nn.functional


Holder().module.torch.os.system("env; echo pwned > /tmp/buildx-escape.txt")
