"""Real permission errors in a test that runs as root: root's CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH let it
into a ``chmod 000`` folder, so :func:`as_a_user` drops the two from the thread's effective capabilities
for the block (and raises them again after): the kernel then answers EACCES as it does to any user. A
process that is not root needs nothing. (``access(2)`` still answers as root: the checks the toolkit makes
with it pass, and the write that follows meets the real refusal.)
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

_CAPABILITY_VERSION_3 = 0x20080522
_DAC_CAPABILITIES = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _capabilities(call: str, header: _Header, data: ctypes.Array[_Data]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, call)(ctypes.byref(header), data) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{call}: {os.strerror(error)}")


@contextmanager
def as_a_user() -> Iterator[None]:
    """The block runs without the capabilities that bypass file permissions (no-op when not root)."""
    if os.geteuid() != 0:
        yield
        return
    header = _Header(_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    try:
        _capabilities("capget", header, data)
        saved = data[0].effective
        data[0].effective = saved & ~_DAC_CAPABILITIES
        _capabilities("capset", header, data)
    except (OSError, AttributeError) as exc:
        pytest.skip(f"root cannot drop its file-permission capabilities here ({exc})")
    try:
        yield
    finally:
        data[0].effective = saved
        _capabilities("capset", header, data)
