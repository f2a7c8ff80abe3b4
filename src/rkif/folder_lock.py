"""One writer per folder: a task folder while it trains, a prediction folder while it is written.

A scheduler may requeue a job while the old one still runs, and a grid can be launched twice;
two writers in one task folder rotate away each other's checkpoints and both write the final
adapter. The writer therefore holds an exclusive flock on {folder}/.rkif.lock for as long as it
works there. The OS releases a flock when its process ends, however it ends, so a lock file left
behind by a killed process never blocks a rerun. Under torchrun, rank 0 holds it for all ranks.
"""

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager

from .errors import InputError

LOCK_NAME = ".rkif.lock"


class FolderBusyError(InputError):
    """Another live process holds the folder."""


def _holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 4096) or b"{}")
    except ValueError:
        return {}


def lock_holder(folder):
    """{pid, host, since, command} of the live process holding ``folder``, or None when nobody does."""
    path = os.path.join(folder, LOCK_NAME)
    if not os.path.isfile(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # releases the shared lock, if taken
    return None


def _acquire(path, folder, what):
    """An fd holding the lock, None where the filesystem has no flock, or FolderBusyError."""
    for attempt in range(20):  # a status probe (lock_holder) holds it for microseconds: try again briefly
        os.makedirs(folder, exist_ok=True)  # its last holder may have removed it, empty, as we looked
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if attempt < 19:
                os.close(fd)
                time.sleep(0.05)
                continue
            h = _holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"the {what} {folder} is in use by another process (pid {h.get('pid', '?')} on host "
                f"{h.get('host', '?')}, since {h.get('since', '?')}); two writers would delete each other's "
                "files. Wait for it to end or stop it; a lock left by a process that died does not count") from None
        except OSError as e:  # e.g. a network filesystem without flock
            os.close(fd)
            print(f"warning: cannot lock the {what} {folder} ({os.strerror(e.errno)}); one writer per folder is not "
                  "enforced there", file=sys.stderr)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its last holder removed the file as we opened it: take the new one
    raise FolderBusyError(f"the {what} {folder}: could not take its lock file {path}")


@contextmanager
def hold_folder(folder, what="task folder"):
    """Hold ``folder`` (created if absent) for the duration of the block, or raise FolderBusyError
    naming the holder. A folder this call created and in which nothing was written is removed again,
    so that a run refused early leaves no trace. Ranks other than 0 of a torchrun job hold nothing."""
    if int(os.environ.get("RANK", 0)) != 0:
        yield
        return
    created = []  # folders made here, deepest first
    d = os.path.abspath(folder)
    while not os.path.exists(d):
        created.append(d)
        d = os.path.dirname(d)
    path = os.path.join(folder, LOCK_NAME)
    fd = _acquire(path, folder, what)
    if fd is None:
        yield
        return
    try:
        try:  # who holds it, for the message a second process prints; the lock itself is the flock
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "command": " ".join(sys.argv)[:500]}).encode())
        except OSError:  # a full disk: the write that fails next says so
            pass
        yield
    finally:
        try:
            if created and os.listdir(folder) == [LOCK_NAME]:
                os.unlink(path)  # while still held: a process that opened it meanwhile sees it gone and retries
                for d in created:
                    try:
                        os.rmdir(d)
                    except OSError:
                        break
        finally:
            os.close(fd)  # releases the lock
