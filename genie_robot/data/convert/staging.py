"""Write a store (or any directory) under a temporary name and rename it into place only when complete.

A conversion that fails half-way therefore leaves no `OUT` at all, only `OUT.partial`, which the next
run removes. Local paths only: renaming is what makes completion atomic.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def check_output(out: str | Path, *, overwrite: bool) -> Path:
    """Resolve `out` and refuse to replace an existing output unless `overwrite`."""
    out = Path(out)
    if "://" in str(out):
        raise ValueError(f"converters write local paths only, got {out}; copy the store afterwards")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    return out


@contextmanager
def staged(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success move it to `final`, on error delete it."""
    final = Path(final)
    tmp = partial_path(final)
    if tmp.exists():  # left by a crashed run
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # overwrite: move the old one aside first so `final` is never half-replaced
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
