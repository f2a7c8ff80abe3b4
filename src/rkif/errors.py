import errno
import os
import resource
import shutil

class InputError(ValueError):
    """Bad user input (flag, file, record). Scripts print the message and exit non-zero."""


class WriteFailedError(InputError):
    """Writing an output failed (a full disk, a file-size limit); what was complete is kept."""


def write_failure(exc, folder):
    """(file, cause) of a failed write under ``folder``, or None when ``exc`` is no write failure.

    An OSError gives its cause, and its file when it names one. torch's zip writer raises a
    RuntimeError naming neither ("unexpected pos ...", "file write failed"). Where no file is named,
    it is the newest one in ``folder`` (the one being written); the cause of a RuntimeError is "no
    space left on device" when the disk is full, "file too large" under a file-size limit.
    """
    if isinstance(exc, OSError):
        cause = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    elif isinstance(exc, RuntimeError) and any(
            s in str(exc) for s in ("inline_container", "PytorchStreamWriter", "file write failed")):
        try:
            full = shutil.disk_usage(folder).free < 1 << 20
        except OSError:
            full = False
        size_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if full:
            cause = os.strerror(errno.ENOSPC).lower()
        elif size_limit != resource.RLIM_INFINITY:
            cause = f"{os.strerror(errno.EFBIG).lower()} (this process may write files of {size_limit} bytes at most)"
        else:
            cause = str(exc).strip().splitlines()[0]
    else:
        return None
    if isinstance(exc, OSError) and exc.filename:
        return exc.filename, cause
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names] if os.path.isdir(folder) else []
    return max(files, key=os.path.getmtime, default=folder), cause


def write_failed(exc, folder, consequence):
    """WriteFailedError("writing FILE failed: CAUSE. consequence") for a failed write under ``folder``,
    or None when ``exc`` is no write failure (the caller re-raises it)."""
    failure = write_failure(exc, folder)
    return None if failure is None else WriteFailedError(f"writing {failure[0]} failed: {failure[1]}. {consequence}")
