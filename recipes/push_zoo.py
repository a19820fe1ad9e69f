"""Publish a folder of finished runs to the Hub in one go, and write the zoo's results table from their model cards.

    python recipes/push_zoo.py runs_dir=runs/ dry_run=true     # what would be uploaded, and the table; touches nothing
    python recipes/push_zoo.py runs_dir=runs/                  # publish to kd-zoo, then rewrite the tables
    python recipes/push_zoo.py runs_dir=runs/ org=my-org overwrite=true
    python recipes/push_zoo.py runs_dir=runs/ write_table_only=true   # the tables only, nothing uploaded
    python recipes/push_zoo.py --help                          # every option (also as --runs_dir runs/ ...)

A finished run is a folder with `model/` (README.md, config.json, model.safetensors, as train_teacher.py and
distill.py export them) and optionally `scores/` (a score set). Each model goes to `ORG/<model_id>` (the card's
model name), each score set to the data set repo `ORG/<data>-<teacher>-<scorer>-scores`, with one `create_repo` +
`upload_folder` per repo (token from HF_TOKEN or the saved login). Every run is checked before anything is
uploaded: a missing card or metrics, an unreadable score set, a token or a local path in a folder, or a repo that
holds another architecture (without overwrite) stops the push with the folders named. The results table (mean ±
std over seeds) replaces the README section between `<!-- zoo-results:start -->` and `<!-- zoo-results:end -->`
and `model_cards/zoo_results.md`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_zoo.config import ConfigTree, option, parse_recipe_args
from kd_zoo.constants import HF_ORG
from kd_zoo.hub import (
    CardTemplateError,
    PublishError,
    RunFolderError,
    collect_runs,
    publish_runs,
    readme_section,
    table_texts,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class PushConfig(ConfigTree):
    runs_dir: str = option("runs", "folder of finished runs (searched recursively)")
    org: str = option(HF_ORG, "Hub organisation or user")
    dry_run: bool = option(False, "print what would be uploaded and the table only")
    overwrite: bool = option(False, "replace a model repo that holds another architecture")
    write_table_only: bool = option(False, "write the tables, upload nothing")
    include_scores: bool = option(True, "publish the score sets too, not only the models")
    readme: str = option(str(ROOT / "README.md"), "the README whose results section is rewritten")
    table: str = option(str(ROOT / "model_cards" / "zoo_results.md"), "the full results table file")


def main(argv: list[str] | None = None, api: Any = None) -> int:
    """Returns the exit status; `api` replaces `huggingface_hub.HfApi()` (tests pass a recording object)."""
    args = parse_recipe_args(__doc__.splitlines()[0], None, argv, schema=PushConfig)
    try:
        runs = collect_runs(args.runs_dir)
        texts = table_texts(runs, args.org, readme=args.readme, table=args.table)  # refuses a README without markers
        print(f"{len(runs.models)} finished run(s), {len(runs.score_sets)} score set(s) under {args.runs_dir}")
        if not args.write_table_only:
            publish_runs(
                runs,
                args.org,
                api=api,
                overwrite=args.overwrite,
                dry_run=args.dry_run,
                include_scores=args.include_scores,
            )
        if args.dry_run:
            print(f"dry run: would write {', '.join(str(p) for p in texts)}; the README section:\n")
            print(readme_section(runs, args.org))
            return 0
        for path, text in texts.items():
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    except (RunFolderError, PublishError, CardTemplateError) as err:
        print(f"push_zoo: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
