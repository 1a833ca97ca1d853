"""Fill the disk through the run directory: many files, then one huge file."""

for i in range(100):
    with open(f"fill-{i}.bin", "wb") as f:  # HOSTILE
        f.write(b"\0" * 2**20)
with open("huge.bin", "wb") as f:
    while True:
        f.write(b"\1" * 2**20)
