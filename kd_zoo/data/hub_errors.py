"""Why a Hub data set could not be loaded, in words a user can act on.

`datasets` reports an unreachable, gated or missing Hub data set through several exception types (connection and
timeout errors, huggingface_hub's offline / gated / not-found errors, HTTP 401 / 403 / 404); `hub_failure_reason`
recognises them anywhere in the exception chain, and `unavailable_message` says how to authenticate or how to pass
a local copy instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
from huggingface_hub import errors as hub_errors

try:
    import httpx

    _TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError,)
except ImportError:  # huggingface_hub < 1.0 uses requests, whose errors are ConnectionError subclasses
    _TRANSPORT_ERRORS = ()

LOCAL_COPY_HINT = (
    "pass a local copy as the source instead: a `save_to_disk` folder, parquet files (a file, a folder or a glob), "
    "or an image folder with one sub-folder per class (`imagefolder:/path/to/dir`)"
)
_ACCESS_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    hub_errors.OfflineModeIsEnabled,
    hub_errors.GatedRepoError,
    hub_errors.LocalTokenNotFoundError,
    hub_errors.RepositoryNotFoundError,
    datasets.exceptions.DatasetNotFoundError,
    *_TRANSPORT_ERRORS,
)


def hub_failure_reason(error: BaseException) -> str | None:
    """Why a Hub load failed, if it is an access problem (offline, no token, gated, not found); else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(current, _ACCESS_ERRORS) or status in (401, 403, 404):
            text = str(current).strip().splitlines()[0] if str(current).strip() else type(current).__name__
            return f"{type(current).__name__}: {text}"
        current = current.__cause__ or current.__context__
    return None


def offline_flags() -> list[str]:
    """The offline switches that are on (environment variables, or `datasets`' own setting)."""
    true_values = datasets.config.ENV_VARS_TRUE_VALUES
    flags = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v, "").upper() in true_values]
    if not flags and getattr(datasets.config, "HF_HUB_OFFLINE", False):
        flags.append("datasets.config.HF_HUB_OFFLINE")
    return flags


def unavailable_message(hub_id: str, split: str, reason: str) -> str:
    """What went wrong loading `split` of `hub_id`, and the two ways to fix it."""
    offline = offline_flags()
    offline_text = f" Offline mode is on ({', '.join(offline)}); unset it to reach the Hub." if offline else ""
    return (
        f"cannot load split {split!r} of the Hub data set {hub_id!r}: {reason}.{offline_text} To fix it, either\n"
        f"  - authenticate: accept the data set's terms on https://huggingface.co/datasets/{hub_id} (gated data "
        "sets such as ImageNet), then run `hf auth login` or set HF_TOKEN (or pass token=...), with the "
        "Hub reachable; or\n"
        f"  - {LOCAL_COPY_HINT}.\n"
        f"(If you meant a local folder: no path {Path(hub_id).absolute()} exists.)"
    )
