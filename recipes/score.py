"""Score a training split for Data Selection: a teacher and a data set -> a score set on disk.

One pass of the frozen teacher over the un-augmented split gives, for every sample, its influence score (EK-FAC
self-influence of the classifier layer by default; see kd_zoo/selection/scorers.py), the teacher's prediction and
whether it was right. The folder written is a Hub-ready data set (README.md + data/*.parquet) that
`datasets.load_dataset(folder, split="train")` and `kd_zoo.selection.ScoreSet.load(folder)` read.

    python recipes/score.py --teacher lrds_resnet8 --weights teacher.safetensors --output-dir scores/demo
    accelerate launch --num_processes 2 recipes/score.py --teacher lrds_resnet32x4 \
        --data uoft-cs/cifar100 --output-dir scores/cifar100-resnet32x4
    # on CPUs, several processes: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...

Several scorers from the same pass: `--scorer influence,loss,el2n` writes one folder per scorer under
--output-dir. Without --data the embedded demo digits are used (offline). The folder is ready for the Hub as a
data set repo: `--push-to-hub ORG/NAME` publishes it (`kd_zoo.hub.publish_folder(..., repo_type="dataset")`, from
the main process; several scorers go to ORG/NAME-<scorer>), `--dry-run` lists what would be uploaded:

    python recipes/score.py --teacher lrds_resnet8 --random-init --output-dir scores/demo \
        --push-to-hub kd-zoo/digits-resnet8-influence-scores --dry-run
"""

import argparse
import inspect
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from kd_zoo import create_model, load_model
from kd_zoo.data import load_tensor_split
from kd_zoo.hub import PublishError, export_scores, publish_folder, resolve_token
from kd_zoo.selection import SCORERS, make_scorer, score_dataset_multi


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="lrds_resnet32x4", help="teacher architecture (timm / kd_zoo name)")
    parser.add_argument(
        "--weights",
        default=None,
        help="teacher weights: a .safetensors file, an exported folder, a zoo tag (arch.tag) or hf-hub:ORG/NAME; "
        "default: the architecture's default zoo tag (from the Hub)",
    )
    parser.add_argument("--random-init", action="store_true", help="random teacher weights (smoke tests only)")
    parser.add_argument("--data", default=None, help="Hub id, local folder or parquet files; omitted: the demo set")
    parser.add_argument("--split", default="train")
    parser.add_argument("--scorer", default="influence", help=f"comma-separated, from {', '.join(SCORERS.names())}")
    parser.add_argument("--batch-size", type=int, default=256, help="images per process and batch")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing score set in --output-dir")
    parser.add_argument("--damping", type=float, default=None, help="absolute damping (overrides --damping-ratio)")
    parser.add_argument("--damping-ratio", type=float, default=None, help="damping = ratio x mean eigenvalue of H")
    parser.add_argument("--val-fraction", type=float, default=None, help="influence_val: held-out share")
    parser.add_argument("--max-params", type=int, default=None, help="influence_exact: largest head allowed")
    parser.add_argument("--seed", type=int, default=None, help="random / influence_val seed")
    parser.add_argument("--fraction", type=float, default=0.8, help="distilled share for the summary")
    parser.add_argument("--memory-limit-mb", type=float, default=256, help="head inputs in memory up to this")
    parser.add_argument("--spill-dir", default=None, help="where head inputs go past the memory limit")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")
    parser.add_argument(
        "--push-to-hub",
        default=None,
        metavar="ORG/NAME",
        help="publish the score set as a data set repo (several scorers: ORG/NAME-<scorer>)",
    )
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list what would be uploaded")
    args = parser.parse_args()
    if args.dry_run and not args.push_to_hub:
        parser.error("--dry-run needs --push-to-hub ORG/NAME")
    if args.push_to_hub and args.push_to_hub.count("/") != 1:
        parser.error(f"--push-to-hub needs ORG/NAME, got {args.push_to_hub!r}")
    return args


def repo_ids(target: str | None, names: list[str]) -> dict[str, str | None]:
    """The data set repo of each scorer's score set: `target` for one scorer, `target-<scorer>` for several."""
    if target is None or len(names) == 1:
        return {name: target for name in names}
    return {name: f"{target}-{name}" for name in names}


def main() -> None:
    args = parse_args()
    if args.push_to_hub and not args.dry_run:
        try:  # before the scoring pass: without a token, nothing is computed, written or uploaded
            resolve_token()
        except PublishError as err:
            sys.exit(f"score.py: {err}")
    accelerator = Accelerator(cpu=args.cpu)

    with accelerator.main_process_first():  # the first process decodes and caches the split
        train = load_tensor_split(args.data, args.split)
    if args.random_init:
        torch.manual_seed(0 if args.seed is None else args.seed)
        teacher = create_model(args.teacher, num_classes=train.num_classes)
        weights = "random-init"
    else:
        teacher = load_model(args.teacher, args.weights)
        weights = args.weights or f"{args.teacher} (default tag)"

    options = {
        "damping": args.damping,
        "damping_ratio": args.damping_ratio,
        "val_fraction": args.val_fraction,
        "max_params": args.max_params,
        "seed": args.seed,
    }
    scorers = []
    for name in [s.strip() for s in args.scorer.split(",") if s.strip()]:
        accepted = inspect.signature(SCORERS.get(name)).parameters
        scorers.append(make_scorer(name, **{k: v for k, v in options.items() if v is not None and k in accepted}))

    start = time.perf_counter()
    results = score_dataset_multi(  # normalised as the teacher's pretrained_cfg says (CIFAR-100's for the zoo)
        teacher,
        train,
        scorers,
        batch_size=args.batch_size,
        accelerator=accelerator,
        teacher_name=args.teacher,
        weights=weights,
        memory_limit_bytes=int(args.memory_limit_mb * 2**20),
        spill_dir=args.spill_dir,
        fraction=args.fraction,
    )
    elapsed = time.perf_counter() - start

    if accelerator.is_main_process:
        out = Path(args.output_dir)
        targets = repo_ids(args.push_to_hub, list(results))
        for name, score_set in results.items():
            folder = export_scores(
                score_set, out / name if len(results) > 1 else out, overwrite=args.overwrite, repo_id=targets[name]
            )
            meta = score_set.metadata
            mistakes = meta["teacher_mistakes"]
            kept = mistakes["in_distilled"]["highest"]
            share = f"{100 * kept / mistakes['count']:.1f} %" if mistakes["count"] else "-"
            print(
                f"{name}: {meta['num_rows']} samples in {elapsed:.1f} s ({accelerator.num_processes} process(es)); "
                f"teacher accuracy {100 * meta['teacher']['accuracy']:.2f} %, {mistakes['count']} mistakes, "
                f"{kept} ({share}) in the distilled top {100 * args.fraction:.0f} %; damping "
                f"{meta['settings'].get('damping')} -> {folder}"
            )
            if targets[name]:
                publish_folder(folder, targets[name], repo_type="dataset", dry_run=args.dry_run)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
