"""One line of a hundred megabytes, then a few more without a newline."""

print("y" * 100_000_000)
print("z" * 10_000_000, end="")
