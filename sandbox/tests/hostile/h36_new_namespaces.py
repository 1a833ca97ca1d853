"""Make a user namespace to regain capabilities (then mount, change the network...)."""

import ctypes
import os  # HOSTILE

os.system("unshare -Ur sh -c 'echo UN''SHARED by the unshare command; id'")
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER
    print("UNSHARED through libc")
else:
    print("refused", os.strerror(ctypes.get_errno()))
