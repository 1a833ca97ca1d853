# ruff: noqa
"""Patch the builtins from the script so that the harness runs attacker code later."""

setattr(print, "x", 1)  # HOSTILE
vars()["__builtins__"]["print"] = lambda *a, **k: None
