"""Hide the names in strings: getattr on __builtins__."""

run = getattr(__builtins__, "ev" + "al")  # HOSTILE
run("__import__('os').system('env; echo pwned > ../escaped.txt')")
