#!/usr/bin/env python3
"""Runs a command as a child subreaper and reaps every descendant until all are gone.

libvirtd daemonizes QEMU; orphans then go to PID 1, which in these sandboxes reaps slowly
(seen: ~2 s added to every domain destroy). Under a subreaper they are reaped at once.
Usage: subreaper.py CMD [ARGS...]   (returns when no descendant is left)
"""
import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36

libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
status = 0
while True:
    try:
        child, st = os.wait()
    except ChildProcessError:
        break
    if child == pid:
        status = os.waitstatus_to_exitcode(st)
sys.exit(status if status > 0 else 0)
