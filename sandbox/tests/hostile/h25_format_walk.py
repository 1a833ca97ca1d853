# ruff: noqa
"""Walk attributes through str.format, which the parser does not see as attribute access."""


def probe():
    pass


print("{0.__globals__[__builtins__]}".format(probe))  # HOSTILE
text = "{0.__globals__}"
print(text.format(probe))
