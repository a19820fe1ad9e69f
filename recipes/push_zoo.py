"""Publish a folder of finished runs to the Hub in one go, and write the zoo's results table from their model cards.

    python recipes/push_zoo.py runs/ --dry-run                # what would be uploaded, and the table; touches nothing
    python recipes/push_zoo.py runs/                          # publish to kd-zoo, then rewrite the tables
    python recipes/push_zoo.py runs/ --org my-org --overwrite
    python recipes/push_zoo.py runs/ --write-table-only       # the tables only, nothing uploaded

A finished run is a folder with `model/` (README.md, config.json, model.safetensors, as train_teacher.py and
distill.py export them) and optionally `scores/` (a score set). Each model goes to `ORG/<model_id>` (the card's
model name), each score set to the data set repo `ORG/<data>-<teacher>-<scorer>-scores`, with one `create_repo` +
`upload_folder` per repo (token from HF_TOKEN or the saved login). Every run is checked before anything is
uploaded: a missing card or metrics, an unreadable score set, a token or a local path in a folder, or a repo that
holds another architecture (without --overwrite) stops the push with the folders named. The results table (mean ±
std over seeds) replaces the README section between `<!-- zoo-results:start -->` and `<!-- zoo-results:end -->`
and `model_cards/zoo_results.md`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="folder of finished runs (searched recursively)")
    parser.add_argument("--org", default=HF_ORG, help=f"Hub organisation or user (default {HF_ORG})")
    parser.add_argument("--dry-run", action="store_true", help="print what would be uploaded and the table only")
    parser.add_argument("--overwrite", action="store_true", help="replace a model repo that holds another arch")
    parser.add_argument("--write-table-only", action="store_true", help="write the tables, upload nothing")
    parser.add_argument("--no-scores", action="store_true", help="publish the models only, not the score sets")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="README whose section is rewritten")
    parser.add_argument(
        "--table", type=Path, default=ROOT / "model_cards" / "zoo_results.md", help="the full results table file"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, api: Any = None) -> int:
    """Returns the exit status; `api` replaces `huggingface_hub.HfApi()` (tests pass a recording object)."""
    args = parse_args(argv)
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
                include_scores=not args.no_scores,
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
