"""Spawn many threads that burn CPU, beyond the process limit."""

import threading  # HOSTILE

threads = []
for _ in range(500):
    try:
        t = threading.Thread(target=lambda: [i * i for i in range(10**9)], daemon=True)
        t.start()
        threads.append(t)
    except RuntimeError as error:
        print("refused thread", len(threads), error)
        break
for t in threads:
    t.join()
