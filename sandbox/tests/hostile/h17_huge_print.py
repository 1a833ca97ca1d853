"""Print without end, as fast as possible."""

line = "x" * 1000
while True:
    print(line)
