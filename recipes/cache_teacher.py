"""Cache a teacher's logits for every augmented view of a training split: built once, read by every student.

The frozen teacher runs once on each of the (2 pad + 1)^2 x 2 views of every training image (162 for CIFAR's pad-4
crop + flip; see kd_zoo/teacher_cache), and every later student of that teacher distils without running it, at
about the cost of cross-entropy (`recipes/distill.py teacher.cache=FOLDER`). The folder written is a Hub-ready data
set (README.md card, cache.json, shards/*.safetensors) that `kd_zoo.teacher_cache.TeacherCache.open(folder or
ORG/NAME)` reads.

    python recipes/cache_teacher.py                 # the demo digits, with the teacher recipes/distill.py exported
    accelerate launch --num_processes 8 recipes/cache_teacher.py \
        --config recipes/configs/cifar100/resnet32x4-resnet8x4/lrds.yaml run.output_dir=caches/cifar100-resnet32x4 \
        caching.scores=scores/cifar100-resnet32x4
    python recipes/cache_teacher.py --help          # every key, with its type and default

The keys are the recipes' own (`teacher.*`, `data.*`, `selection.*`, `run.*`), so a pair's config caches that
pair's teacher on that pair's data; `caching.*` holds the build's settings. Killed? Run the same command again: it
keeps every finished shard and builds the rest. `caching.scores=DIR` also writes Data Selection's score set (what
recipes/score.py writes, for `selection.scorer`) from the centre views the build stored, with no further teacher
inference. `run.push_to_hub=ORG/NAME` publishes the cache as a data set repo; `run.dry_run=true` lists what would be
uploaded.
"""

import json
from pathlib import Path

import torch
from accelerate import Accelerator

from kd_zoo import create_model, load_model
from kd_zoo.config import parse_recipe_args
from kd_zoo.data import load_tensor_split
from kd_zoo.hub import export_scores, publish_folder, resolve_token
from kd_zoo.hub.cache_export import cache_repo_name, cache_summary, export_teacher_cache
from kd_zoo.teacher_cache import MANIFEST, TeacherCache, build_teacher_cache
from kd_zoo.workflow import run_main

DEMO_CACHE = Path(__file__).parent / "configs" / "demo_cache.yaml"


def main() -> None:
    cfg = parse_recipe_args(__doc__.splitlines()[0], DEMO_CACHE)
    caching, out = cfg.caching, Path(cfg.run.output_dir)
    if cfg.run.push_to_hub and not cfg.run.dry_run:
        resolve_token()  # before the build: without a token, nothing is computed, written or uploaded
    accelerator = Accelerator(cpu=cfg.run.cpu)
    with accelerator.main_process_first():  # the first process decodes and caches the split
        train = load_tensor_split(cfg.data.name, cfg.data.train_split, revision=cfg.data.revision, label=cfg.data.label)
    if cfg.scoring.random_init:
        torch.manual_seed(cfg.selection.seed)
        teacher, weights = create_model(cfg.teacher.model, num_classes=train.num_classes), "random-init"
    else:
        teacher = load_model(cfg.teacher.model, cfg.teacher.weights)
        weights = cfg.teacher.weights or f"{cfg.teacher.model} (default tag)"

    report = build_teacher_cache(
        teacher,
        train,
        out,
        pad=caching.pad,
        mean=caching.mean,  # None: the teacher's pretrained_cfg, as the students' runs feed it
        std=caching.std,
        dtype=caching.dtype,
        batch_size=caching.batch_size,
        shard_rows=caching.shard_rows,
        accelerator=accelerator,
        channels_last=caching.channels_last,
        autocast=caching.autocast,
        teacher_name=cfg.teacher.model,
        weights=weights,
        overwrite=cfg.run.overwrite,
        stop_after_shards=caching.stop_after_shards,
    )
    accelerator.print(
        f"{report.built} shards built, {report.reused} reused, of {report.num_shards}: {report.images:,} images in "
        f"{report.seconds:.1f} s ({report.images_per_second:,.0f} images/s, {accelerator.num_processes} process(es))"
    )
    if not report.complete:
        accelerator.print(f"the build is not complete: run the same command again to resume it ({out})")
        accelerator.end_training()
        return

    score_sets = {}
    if caching.scores is not None:  # every process takes part (the scoring pass is collective)
        cache = TeacherCache.open(out, placement="mmap")
        score_sets = cache.score_sets([cfg.selection.scorer], accelerator=accelerator, fraction=cfg.selection.fraction)
    if accelerator.is_main_process:
        folder = export_teacher_cache(out, repo_id=cfg.run.push_to_hub)
        print(f"teacher cache: {cache_summary(folder)} -> {folder}")
        for score_set in score_sets.values():
            written = export_scores(
                score_set, caching.scores, overwrite=cfg.run.overwrite, class_names=train.class_names
            )
            mistakes = score_set.metadata["teacher_mistakes"]
            count = mistakes["count"]
            print(f"{score_set.scorer} scores: {len(score_set)} samples, {count} teacher mistakes -> {written}")
        if cfg.run.push_to_hub:
            publish_folder(folder, cfg.run.push_to_hub, repo_type="dataset", dry_run=cfg.run.dry_run)
        else:
            manifest = json.loads((folder / MANIFEST).read_text())
            print(f"publish it with run.push_to_hub=ORG/{cache_repo_name(manifest)}")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    run_main(main)
