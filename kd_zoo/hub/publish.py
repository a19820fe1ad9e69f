"""Publishing folders to the Hub: one `create_repo` + one `upload_folder` per repo, every check done first.

`publish_folder` uploads one exported folder; `publish_runs` the models and score sets of a folder of finished
runs (`kd_zoo.hub.runs`). The token comes from `HF_TOKEN` or the saved login and is never logged or written into a
folder. A dry run prints what would be uploaded.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import HfApi

from ..constants import HF_ORG
from .privacy import find_private_content
from .runs import FinishedRuns, RunFolderError, ScoreSetFolder, group_results

_REPO_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class PublishError(RuntimeError):
    """Publishing was refused before anything was uploaded."""


def check_publishable(folder: str | Path, local_paths: Sequence[str | Path] = ()) -> None:
    """Refuse, before any network call, a folder holding a token or a local path (`find_private_content`)."""
    findings = find_private_content(folder, local_paths)
    if findings:
        raise PublishError(
            f"{folder} holds what must not be published; nothing was uploaded:\n  - "
            + "\n  - ".join(findings)
            + "\nRemove it from those files (re-export the folder: exports reduce local paths to names)."
        )


def resolve_token(token: str | None = None) -> str:
    """`token`, else `HF_TOKEN`, else the saved login; `PublishError` (nothing uploaded) when there is none."""
    if token:
        return token
    found = os.environ.get("HF_TOKEN") or huggingface_hub.get_token()
    if not found:
        raise PublishError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access to the "
            "target organisation); nothing was uploaded"
        )
    return found


def remote_architecture(api: Any, repo_id: str, token: str) -> str | None:
    """The architecture in an existing repo's config.json, or None when the repo or file does not exist."""
    if not api.file_exists(repo_id, "config.json", token=token):
        return None
    path = api.hf_hub_download(repo_id=repo_id, filename="config.json", token=token)
    return json.loads(Path(path).read_text()).get("architecture")


def publish_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    token: str | None = None,
    private: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    api: Any = None,
) -> list[str]:
    """Upload an exported folder to `repo_id` with one `create_repo` + one `upload_folder`.

    Refuses (before uploading) without a token, and, for models, when the repo already holds a different
    architecture unless `overwrite=True`. Returns the uploaded file names; `dry_run` prints and returns them.
    """
    folder = Path(folder)
    if "/" not in repo_id:
        raise PublishError(f"repo_id must be 'ORG/NAME', got {repo_id!r}")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if not files:
        raise PublishError(f"{folder} is empty: export a model or a score set into it first")
    check_publishable(folder)
    if dry_run:
        print(f"dry run: would upload to {repo_type} repo {repo_id}:")
        for name in files:
            print(f"  {name} ({(folder / name).stat().st_size:,} bytes)")
        return files
    token = resolve_token(token)
    api = api or HfApi()
    if repo_type == "model" and (folder / "config.json").is_file():
        local = json.loads((folder / "config.json").read_text()).get("architecture")
        remote = remote_architecture(api, repo_id, token)
        if remote is not None and remote != local and not overwrite:
            raise PublishError(
                f"{repo_id} already holds a {remote} model and this folder is a {local}: refusing to overwrite; "
                "pass overwrite=True (recipes/push_zoo.py: overwrite=true) if that is intended"
            )
    api.create_repo(repo_id, token=token, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        token=token,
        commit_message=commit_message or f"Upload from kd_zoo ({len(files)} files)",
    )
    return files


@dataclass(frozen=True)
class Upload:
    folder: Path
    repo_id: str
    repo_type: str  # "model" or "dataset"


def _check_repo_name(name: str, where: Path) -> None:
    if not name or len(name) > 96 or set(name) - _REPO_NAME_CHARS or name.startswith(("-", ".")):
        raise RunFolderError(f"{where}: {name!r} is not a valid Hub repo name (letters, digits, '.', '_', '-'; 96 max)")


def plan_uploads(runs: FinishedRuns, org: str = HF_ORG, *, include_scores: bool = True) -> list[Upload]:
    """The repos to create and the folder uploaded to each: one model repo per model id, one data set repo per
    distinct score set.

    Raises:
        RunFolderError: an invalid repo name, or two runs with different score sets for the same repo name (another
            teacher's weights, data or scorer settings under the same names).
    """
    if not org or "/" in org:
        raise RunFolderError(f"--org must be an organisation or user name, got {org!r}")
    uploads = []
    for row in group_results(runs.models):
        chosen = row.published
        _check_repo_name(chosen.model_id, chosen.folder)
        uploads.append(Upload(chosen.folder, f"{org}/{chosen.model_id}", "model"))
    if include_scores:
        by_name: dict[str, list[ScoreSetFolder]] = defaultdict(list)
        for score_set in runs.score_sets:
            by_name[score_set.name].append(score_set)
        for name, sets in sorted(by_name.items()):
            _check_repo_name(name, sets[0].folder)
            if len({s.identity for s in sets}) > 1:
                folders = "\n  - ".join(f"{s.folder} (teacher weights {s.identity[0][:16]})" for s in sets)
                raise RunFolderError(
                    f"these score sets would all go to {org}/{name} but differ (teacher weights, data or scorer "
                    f"settings):\n  - {folders}\npublish one of them under its own name with `python "
                    "recipes/score.py ... --push-to-hub ORG/NAME`, and the models with --no-scores"
                )
            uploads.append(Upload(sets[0].folder, f"{org}/{name}", "dataset"))
    return uploads


def publish_runs(
    runs: FinishedRuns,
    org: str = HF_ORG,
    *,
    api: Any = None,
    token: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    include_scores: bool = True,
) -> list[Upload]:
    """Publish every repo of `plan_uploads` with `kd_zoo.hub.publish_folder` (one create_repo + upload_folder each).

    Everything that can refuse is checked before the first upload: the plan, the token (`PublishError` without
    one), and, unless `overwrite`, that no model repo already holds another architecture. `dry_run` prints what
    would be uploaded and touches nothing.
    """
    uploads = plan_uploads(runs, org, include_scores=include_scores)
    for upload in uploads:
        if upload.repo_id not in (upload.folder / "README.md").read_text(encoding="utf-8"):
            print(f"note: the card in {upload.folder} names another repo than {upload.repo_id} in its usage snippet")
    if dry_run:
        for upload in uploads:
            publish_folder(upload.folder, upload.repo_id, repo_type=upload.repo_type, dry_run=True)
        return uploads
    token = resolve_token(token)
    api = api or HfApi()
    if not overwrite:
        clashes = []
        for upload in (u for u in uploads if u.repo_type == "model"):
            local = json.loads((upload.folder / "config.json").read_text()).get("architecture")
            remote = remote_architecture(api, upload.repo_id, token)
            if remote is not None and remote != local:
                clashes.append(f"{upload.repo_id} holds a {remote} model, {upload.folder} is a {local}")
        if clashes:
            raise PublishError(
                "refusing to overwrite (nothing was uploaded; pass overwrite=True, push_zoo.py: overwrite=true, if "
                "intended):\n  - " + "\n  - ".join(clashes)
            )
    for upload in uploads:
        print(f"publishing {upload.folder} -> {upload.repo_type} repo {upload.repo_id}")
        publish_folder(
            upload.folder, upload.repo_id, repo_type=upload.repo_type, token=token, overwrite=overwrite, api=api
        )
    return uploads
