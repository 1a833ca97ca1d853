"""Import os without an import statement."""

os = __import__("os")  # HOSTILE
os.system("echo pwned > ../escaped.txt; env")
