"""Train a model with cross-entropy: the zoo's teachers (and the students' CE baselines).

    python recipes/train_teacher.py                                # the demo teacher, offline, CPU
    accelerate launch recipes/train_teacher.py --config recipes/configs/cifar100/teachers/resnet32x4.yaml
    accelerate launch --multi_gpu --num_processes 8 recipes/train_teacher.py --config ... train.epochs=240

The architecture is `teacher.model` (any `lrds_*` or timm name); the schedule is the `train` section. The run
folder gets checkpoints, `metrics.jsonl`, the resolved `config.yaml` and `model/`, the exported model with its card.
"""

from pathlib import Path

from kd_zoo.config import parse_recipe_args
from kd_zoo.hub import export_run, publish_folder
from kd_zoo.workflow import result_table, run_data, start_run, train_model, trained_card_fields

DEMO_TEACHER = Path(__file__).parent / "configs" / "demo_teacher.yaml"


def main() -> None:
    cfg = parse_recipe_args("Train a model with cross-entropy.", DEMO_TEACHER)
    accelerator, run_dir = start_run(cfg, "train_teacher")
    data = run_data(accelerator, cfg, cfg.teacher.model)
    model, result = train_model(cfg, accelerator, data, run_dir)

    if accelerator.is_main_process:
        fields = trained_card_fields(cfg, accelerator, run_dir, result, data)
        folder = export_run(run_dir, model, fields, summary=result.to_dict(), label_names=data.class_names)
        best, last = f"{result.best_top1:.2f}", f"{result.last_top1:.2f}"
        print("\n" + result_table([(cfg.teacher.model, best, last, f"{result.train_seconds:.0f} s")]))
        print(f"exported to {folder}")
        if cfg.run.push_to_hub:
            publish_folder(folder, cfg.run.push_to_hub, dry_run=cfg.run.dry_run)
    accelerator.end_training()


if __name__ == "__main__":
    main()
