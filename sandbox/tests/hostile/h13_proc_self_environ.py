"""Read the child's own environment: it must hold no secret."""

print(open("/proc/self/environ", "rb").read())  # HOSTILE
print(open("/proc/thread-self/environ", "rb").read())
