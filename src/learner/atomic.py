"""Atomic file writes: write to a temporary name in the same folder, then ``os.replace``.

A reader never sees a half-written file and concurrent writers of the same path cannot interleave: the
last complete write wins. Every file the toolkit writes (manifests, metrics, caches, checkpoints) goes
through here.

Writing can fail for reasons of the place, not of the toolkit: a file where a folder is needed, a path under
``/dev/null``, no permission, a read-only file system, a full disk. :func:`usable_folder` refuses such a
place before any work starts, and :func:`storage_errors` (which :func:`atomic_path` applies) turns the
failure of a write already under way into a one-line :class:`~learner.errors.OutputError` naming the path;
the temporary file is removed, so the previous version of the file stays as it was.

Writing can also destroy what the user keeps: :func:`check_outputs` is the one rule of the commands that
write where the user says, checked before any work: never over one of the command's own inputs, and over
an existing file (or into a non-empty folder) only with ``--force``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from learner.errors import OutputError

STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
        errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG,
    }
)  # fmt: skip
"""The errors that say the place cannot take the write (rather than that the toolkit has a bug)."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    Example::

        with atomic_path(out / "table.csv") as tmp:
            frame.to_csv(tmp, index=False)
    """
    target = Path(path)
    if problem := path_problem(target):
        raise OutputError(f"{target}: cannot write: {problem}")
    if target.is_dir():  # rename(2) cannot put a file over a folder (over the current folder: EBUSY)
        raise OutputError(f"{target}: is a folder; name a file to write")
    with storage_errors(target):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            usable_folder(target.parent, str(target))  # names the file in the way, if that is the cause
            raise
        # the temporary name is the target's, cut short: a name near the file system's limit still fits
        prefix = f".{target.name[:TEMP_NAME_CHARS]}."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any new file
        try:
            yield tmp
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextmanager
def storage_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an :data:`STORAGE_ERRNOS` ``OSError`` raised while writing ``path`` into a one-line
    :class:`OutputError` naming ``path`` (other errors pass through unchanged).

    Example::

        with storage_errors(out / "table.parquet"):
            frame.to_parquet(staging / "table.parquet")
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise OutputError(f"{path}: cannot write: {exc.strerror}{where}") from exc


def usable_folder(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path once it is known that a folder can be written there (it is not created).

    Raises:
        OutputError: ``path`` or the nearest existing folder above it is a file (``/dev/null/x``), or that
            folder is not writable. The message starts with ``what`` (e.g. ``run directory``), then names
            the path.
    """
    folder = Path(path)
    if problem := path_problem(folder):
        raise OutputError(f"{what}: {folder}: {problem}")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what}: {folder} is a file, not a folder")
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what}: {existing} (in {folder}) is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: {existing} (in {folder}) is not writable")
    return folder


def usable_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path once it is known that a file can be written there (:func:`atomic_path` would not
    fail for the place): run it before the work whose result goes there.

    Raises:
        OutputError: ``path`` is a folder, its name is too long, or its folder is not usable
            (:func:`usable_folder`); the message starts with ``what`` (e.g. ``--out``).
    """
    target = Path(path)
    if problem := path_problem(target):
        raise OutputError(f"{what}: {target}: {problem}")
    if target.is_dir():
        raise OutputError(f"{what}: {target} is a folder; name a file to write")
    usable_folder(target.parent, what)
    return target


def lies_within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, once symbolic links and ``..`` are resolved (so a
    file is "within" only itself)."""
    base, resolved = Path(folder).resolve(), Path(path).resolve()
    return resolved == base or base in resolved.parents


def check_outputs(
    outputs: Iterable[str | os.PathLike[str]],
    *,
    force: bool,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    what: str = "--out",
) -> None:
    """Refuse, before any work and touching nothing, a write that would destroy something: the one rule of
    every command that writes to a path the user names (``learner embed --out``, ``learner predict --out``,
    ``learner export --out``).

    ``outputs`` are the files (or the folder) the command is about to write; ``inputs`` maps what each
    input is called (``"the --pairs CSV"``) to its path, a file or a folder.

    Raises:
        OutputError: an output that is an input or lies inside an input folder, even with ``force`` (the
            command would destroy what it reads); without ``force``, an output that exists (a file, or a
            folder holding anything). The message starts with ``what`` and names the path.
    """
    targets = [Path(output) for output in outputs]
    for target in targets:
        for name, item in (inputs or {}).items():
            if lies_within(target, item):
                where = f"is {name}" if lies_within(item, target) else f"lies inside {name} ({item})"
                raise OutputError(
                    f"{what}: {target} {where}, an input of this command; choose another {what} (--force "
                    "never overwrites an input)"
                )
    if force:
        return
    taken = [target for target in targets if _taken(target)]
    if taken:
        more = f" (and {len(taken) - 1} more of the files to write)" if len(taken) > 1 else ""
        if taken[0].is_dir():
            held = "holds files; pass --force to write into it (files of the same name are replaced)"
        else:
            held = f"exists{more}; pass --force to overwrite it"
        raise OutputError(f"{what}: {taken[0]} {held} or choose another {what}")


def _taken(path: Path) -> bool:
    """Whether writing ``path`` would replace something: a file (or link) there, or a non-empty folder."""
    if path.is_dir():
        return any(path.iterdir())
    return os.path.lexists(path)


TEMP_NAME_CHARS = 64
"""The most characters of a target's name that its temporary sibling's name repeats."""


def path_problem(path: Path) -> str | None:
    """What the file system would say to ``path`` before anything is written there: a name longer than
    it allows (ENAMETOOLONG), a symbolic link that leads back to itself (ELOOP), a folder that cannot be
    looked into (EACCES); None when none of these holds (or the check itself cannot tell)."""
    limit = _name_limit(path)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            shown = part if len(part) <= 40 else f"{part[:40]}…"
            return f"File name too long ({shown!r} is {size} bytes; the file system allows {limit})"
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None  # not there yet (or under a file: usable_folder names it)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{exc.strerror} (a symbolic link that leads back to itself)"
        if exc.errno == errno.EACCES:
            return f"{exc.strerror} (a folder above it cannot be looked into)"
        return None
    return None


def _name_limit(path: Path) -> int:
    """The longest name (in bytes) the file system under ``path`` allows (NAME_MAX; 255 if unknown)."""
    existing = path.absolute()
    while existing != existing.parent:
        try:
            limit = os.pathconf(existing, "PC_NAME_MAX")
        except OSError:
            existing = existing.parent
        else:
            return limit if limit > 0 else 1 << 16  # -1: no limit
    return 255


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_figure(figure: Any, png: str | os.PathLike[str], formats: Iterable[str], *, dpi: int) -> Path:
    """Atomically write a matplotlib ``figure`` in each of ``formats`` (e.g. ``("png", "svg")``) as ``png``
    with that suffix; returns ``png``. Each format is a full draw, so every extra format costs as much."""
    target = Path(png)
    for fmt in formats:
        with atomic_path(target.with_suffix(f".{fmt}")) as tmp:
            figure.savefig(tmp, format=fmt, dpi=dpi)
    return target


def write_json(path: str | os.PathLike[str], obj: Any, *, sort_keys: bool = True) -> Path:
    """Atomically write ``obj`` as strict, indented JSON, its keys sorted unless ``sort_keys`` is False (a
    typed record whose field order, or whose mappings' order, is the user's: a sweep's settings).

    Paths, numpy/torch scalars and arrays are converted; NaN and ±inf (an undefined Pearson r, say)
    become ``null`` because JSON has no such numbers and a file other tools cannot parse helps nobody.
    """
    text = json.dumps(finite(obj), indent=2, sort_keys=sort_keys, default=_json_default, allow_nan=False)
    return write_text(path, text + "\n")


def finite(value: Any) -> Any:
    """``value`` with every NaN and ±inf float replaced by None, recursively (tuples become lists, numpy and
    torch values plain Python), so that strict JSON can hold it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, os.PathLike):  # numpy / torch values
        return finite(value.tolist())
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
