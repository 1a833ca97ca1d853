"""Print the whole environment, hoping for DATABASE_URL or a key."""

import os  # HOSTILE

print(dict(os.environ))
print(os.environ.get("DATABASE_URL"), os.environ.get("BUILDX_TEST_SECRET"))
