"""Where kd_zoo keeps what it builds once (the demo data set, decoded tensor splits): `$KD_ZOO_CACHE` or
`~/.cache/kd_zoo`, overridden by an explicit `cache_dir` argument."""

from __future__ import annotations

import os
from pathlib import Path

from ..constants import DEFAULT_CACHE_DIR, KD_ZOO_CACHE_ENV


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The kd_zoo cache folder: `cache_dir` if given, else `$KD_ZOO_CACHE`, else `~/.cache/kd_zoo`."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(KD_ZOO_CACHE_ENV) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()
