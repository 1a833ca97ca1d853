"""Fill the run folder in a burst of files each under the file size limit: the folder's size is
measured once a second, so everything written between two measurements lands before the stop."""

block = b"\1" * 2**20
for i in range(10_000):
    with open(f"burst-{i}.bin", "wb") as f:  # HOSTILE
        for _ in range(7):
            f.write(block)
