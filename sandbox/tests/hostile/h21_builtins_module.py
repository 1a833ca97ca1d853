"""Reach open() and __import__ through the builtins module."""

import builtins  # HOSTILE

print(builtins.open("/etc/shadow").read())
builtins.__import__("os").system("env")
