"""One build per folder: a task build is written beside its destination and swapped in whole when complete.

Both builders (BgKnown, APwD) write through :func:`building`. A folder that already holds something is
refused unless ``force``; with ``force`` it is replaced only if it holds a build of the same kind (never
an arbitrary folder). The new build goes into ``.<name>.building-<pid>`` in the same parent (same file
system, so renames are atomic); once it is complete the old build is renamed aside
(``.<name>.old-<pid>``), the new one renamed into place, and the old one deleted. So a build that
fails or is killed half-way leaves the old build as it was, and a folder never mixes two builds.
Staging folders left by a killed build (their pid is gone) are removed at the next build.

``check_output_folder`` / ``check_output_file``: the evaluators' output paths, checked before the work
starts, so a results path that cannot be written fails in a second, not after an hour of evaluation.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from . import TaskError

__all__ = ["building", "check_output_file", "check_output_folder", "stale_staging"]

_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:building|old)-(?P<pid>\d+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_staging(out: Path) -> list[Path]:
    """Staging folders of ``out`` (``.<name>.building-<pid>`` / ``.old-<pid>``) whose process is gone."""
    if not out.parent.is_dir():
        return []
    found = []
    for p in out.parent.iterdir():
        m = _STAGING.match(p.name)
        if m and m["name"] == out.name and p.is_dir() and not _alive(int(m["pid"])):
            found.append(p)
    return sorted(found)


def _check_out(out: Path, force: bool, is_build: Callable[[Path], bool], what: str) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise TaskError(f"--out {out} exists and is not a folder; choose another path")
    if not any(out.iterdir()):
        return
    if not force:
        raise TaskError(
            f"--out {out} already exists and is not empty (another {what} build?); a folder holds one "
            "build: pass --force to replace it whole, or choose another --out"
        )
    if not is_build(out):
        raise TaskError(
            f"--out {out} is not a {what} build folder; refusing to delete it with --force: choose an "
            "empty or new folder"
        )


def _recover(out: Path) -> None:
    """Clean up after a killed build: its staging folder goes; an old build renamed aside just before the
    kill goes back into place if nothing replaced it (else it goes too)."""
    for stale in stale_staging(out):
        if ".old-" in stale.name and not out.exists():
            os.replace(stale, out)
        else:
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def building(out: str | Path, force: bool, is_build: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """``with building(out, force, is_build, "APwD") as tmp:`` write the whole build into ``tmp``; on a clean
    exit it replaces ``out`` (see the module docstring), on an error ``tmp`` is removed and ``out`` is
    untouched. Checks ``out`` first: a non-empty folder needs ``force``, and ``is_build(out)`` must say it
    holds a build of this kind."""
    out = Path(out).resolve()  # "." must stage beside the folder, not inside it
    if not out.name:
        raise TaskError(f"--out {out} is a file-system root; choose a folder for the build")
    cwd = Path.cwd().resolve()
    if cwd == out or out in cwd.parents:  # the swap would leave this process (and the shell) in a deleted folder
        raise TaskError(
            f"--out {out} is or holds the current folder; the build replaces --out whole: give a new "
            "folder inside it instead, e.g. --out ./build"
        )
    _recover(out)
    _check_out(out, force, is_build, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _check_out(out, force, is_build, what)  # nobody else filled it meanwhile
        if out.exists():
            os.replace(out, old)  # an empty folder, or the old build (force): kept until the new one is in
        try:
            os.replace(tmp, out)
        except BaseException:
            if old.exists() and not out.exists():
                os.replace(old, out)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is a file (no folder can be made under it), if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_folder(path: str | Path, flag: str) -> Path:
    """Before a long evaluation: ``path`` (given as ``flag``) must be a folder or creatable as one."""
    path = Path(path)
    blocker = path if path.exists() and not path.is_dir() else _file_in_the_way(path)
    if blocker is not None:
        raise TaskError(f"{flag} {path}: {blocker} is a file, not a folder; choose another {flag}")
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """Before a long evaluation: ``path`` (given as ``flag``) must be a file or creatable as one."""
    path = Path(path)
    if path.is_dir():
        raise TaskError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'results.json'}")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise TaskError(f"{flag} {path}: {blocker} is a file, not a folder; choose another {flag}")
    return path
