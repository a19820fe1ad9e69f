"""Score a training split for Data Selection: a teacher and a data set -> a score set folder on disk.

One pass of the frozen teacher over the un-augmented split gives, for every sample, its influence score (EK-FAC
self-influence of the classifier layer by default; see kd_zoo/selection/scorers.py), the teacher's prediction and
whether it was right. The folder written is a Hub-ready data set (README.md + data/*.parquet) that
`datasets.load_dataset(folder, split="train")` and `kd_zoo.selection.ScoreSet.load(folder)` read.

    python recipes/score.py                         # the demo digits, with the teacher recipes/distill.py exported
    python recipes/score.py teacher.model=lrds_resnet8 teacher.weights=teacher.safetensors run.output_dir=scores/x
    accelerate launch --num_processes 2 recipes/score.py \
        --config recipes/configs/cifar100/resnet32x4-resnet8x4/lrds.yaml run.output_dir=scores/cifar100-resnet32x4
    python recipes/score.py --help                  # every key, with its type and default

The keys are the recipes' own (`teacher.*`, `data.*`, `selection.*`, `run.*`), so a pair's config scores that
pair's teacher; `scoring.*` holds the scorer settings. Several scorers from the same pass:
`scoring.scorers=[influence,loss,el2n]` writes one folder per scorer under run.output_dir. `run.push_to_hub=ORG/NAME`
publishes the folder as a data set repo (several scorers: ORG/NAME-<scorer>); `run.dry_run=true` lists what would
be uploaded.
"""

import inspect
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from kd_zoo import create_model, load_model
from kd_zoo.config import parse_recipe_args
from kd_zoo.data import load_tensor_split
from kd_zoo.hub import export_scores, publish_folder, resolve_token
from kd_zoo.selection import SCORERS, make_scorer, score_dataset_multi
from kd_zoo.workflow import run_main

DEMO_SCORES = Path(__file__).parent / "configs" / "demo_scores.yaml"


def repo_ids(target: str | None, names: list[str]) -> dict[str, str | None]:
    """The data set repo of each scorer's score set: `target` for one scorer, `target-<scorer>` for several."""
    if target is None or len(names) == 1:
        return {name: target for name in names}
    return {name: f"{target}-{name}" for name in names}


def main() -> None:
    cfg = parse_recipe_args(__doc__.splitlines()[0], DEMO_SCORES)
    scoring = cfg.scoring
    if cfg.run.push_to_hub and not cfg.run.dry_run:
        resolve_token()  # before the scoring pass: without a token, nothing is computed, written or uploaded
    accelerator = Accelerator(cpu=cfg.run.cpu)
    with accelerator.main_process_first():  # the first process decodes and caches the split
        train = load_tensor_split(cfg.data.name, cfg.data.train_split, revision=cfg.data.revision, label=cfg.data.label)
    if scoring.random_init:
        torch.manual_seed(cfg.selection.seed)
        teacher, weights = create_model(cfg.teacher.model, num_classes=train.num_classes), "random-init"
    else:
        teacher = load_model(cfg.teacher.model, cfg.teacher.weights)
        weights = cfg.teacher.weights or f"{cfg.teacher.model} (default tag)"

    settings = {k: getattr(scoring, k) for k in ("damping", "damping_ratio", "val_fraction", "max_params")}
    settings["seed"] = cfg.selection.seed
    scorers = []
    for name in scoring.scorers or [cfg.selection.scorer]:
        accepted = inspect.signature(SCORERS.get(name)).parameters
        scorers.append(make_scorer(name, **{k: v for k, v in settings.items() if v is not None and k in accepted}))

    start = time.perf_counter()
    results = score_dataset_multi(  # normalised as the teacher's pretrained_cfg says (CIFAR-100's for the zoo)
        teacher,
        train,
        scorers,
        batch_size=max(1, cfg.data.eval_batch_size // accelerator.num_processes),
        accelerator=accelerator,
        teacher_name=cfg.teacher.model,
        weights=weights,
        memory_limit_bytes=int(scoring.memory_limit_mb * 2**20),
        spill_dir=scoring.spill_dir,
        fraction=cfg.selection.fraction,
    )
    elapsed = time.perf_counter() - start

    if accelerator.is_main_process:
        out = Path(cfg.run.output_dir)
        targets = repo_ids(cfg.run.push_to_hub, list(results))
        for name, score_set in results.items():
            folder = out / name if len(results) > 1 else out
            export_scores(
                score_set, folder, overwrite=cfg.run.overwrite, repo_id=targets[name], class_names=train.class_names
            )
            meta = score_set.metadata
            mistakes = meta["teacher_mistakes"]
            kept = mistakes["in_distilled"]["highest"]
            share = f"{100 * kept / mistakes['count']:.1f} %" if mistakes["count"] else "-"
            print(
                f"{name}: {meta['num_rows']} samples in {elapsed:.1f} s ({accelerator.num_processes} process(es)); "
                f"teacher accuracy {100 * meta['teacher']['accuracy']:.2f} %, {mistakes['count']} mistakes, "
                f"{kept} ({share}) in the distilled top {100 * cfg.selection.fraction:.0f} %"
                + (f"; damping {meta['settings']['damping']}" if meta["settings"].get("damping") else "")
                + f" -> {folder}"
            )
            if targets[name]:
                publish_folder(folder, targets[name], repo_type="dataset", dry_run=cfg.run.dry_run)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    run_main(main)
