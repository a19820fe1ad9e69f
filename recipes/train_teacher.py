"""Train a model with cross-entropy: the zoo's teachers (and the students' CE baselines).

    python recipes/train_teacher.py                                # the demo's teacher, offline, CPU
    accelerate launch recipes/train_teacher.py --config recipes/configs/cifar100/teachers/resnet32x4.yaml
    accelerate launch --multi_gpu --num_processes 8 recipes/train_teacher.py --config ... --train.epochs 240
    python recipes/train_teacher.py --help                         # every config key, with its type and default

The architecture is `teacher.model` (any `lrds_*` or timm name); the schedule is the `train` section. The run
folder gets checkpoints, `metrics.jsonl`, the resolved `config.yaml` and `model/`, the exported model with its card.
"""

from pathlib import Path

from kd_zoo.config import parse_recipe_args
from kd_zoo.hub import publish_folder
from kd_zoo.workflow import (
    export_trained,
    result_table,
    run_data,
    run_main,
    start_run,
    train_model,
    trained_card_fields,
)

DEMO_TEACHER = Path(__file__).parent / "configs" / "demo_teacher.yaml"


def main() -> None:
    cfg = parse_recipe_args("Train a model with cross-entropy.", DEMO_TEACHER)
    with start_run(cfg, "train_teacher") as (accelerator, run_dir):
        data = run_data(accelerator, cfg, cfg.teacher.model)
        model, result = train_model(cfg, accelerator, data, run_dir)

        if accelerator.is_main_process:
            fields = trained_card_fields(cfg, accelerator, run_dir, result, data)
            folder = export_trained(run_dir, model, result, data, fields)
            best, last, seconds = f"{result.best_top1:.2f}", f"{result.last_top1:.2f}", f"{result.train_seconds:.0f} s"
            print("\n" + result_table([(cfg.teacher.model, best, last, seconds)]))
            if folder is not None:
                print(f"exported to {folder}")
                if cfg.run.push_to_hub:
                    publish_folder(folder, cfg.run.push_to_hub, dry_run=cfg.run.dry_run)


if __name__ == "__main__":
    run_main(main)
