"""Import by name with importlib."""

import importlib  # HOSTILE

subprocess = importlib.import_module("subprocess")
print(subprocess.run(["sh", "-c", "env; echo pwned > ../escaped.txt"], capture_output=True).stdout)
