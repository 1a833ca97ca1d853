"""Allocate memory until something gives."""

blocks = []
while True:
    blocks.append([0] * (8 * 2**20))
