"""Train a model with cross-entropy: the zoo's teachers (and the students' CE baselines).

    python recipes/train_teacher.py                                # the demo teacher, offline, CPU
    accelerate launch recipes/train_teacher.py --config recipes/configs/cifar100/teachers/resnet32x4.yaml
    accelerate launch --multi_gpu --num_processes 8 recipes/train_teacher.py --config ... train.epochs=240

The architecture is `teacher.model` (any `lrds_*` or timm name); the schedule is the `train` section. The run
folder gets checkpoints, `metrics.jsonl`, the resolved `config.yaml` and `model/`, the exported model with its card.
"""

import argparse
import json
from pathlib import Path

import kd_zoo
from kd_zoo.config import load_config
from kd_zoo.engine import Supervised
from kd_zoo.engine.loop import fit
from kd_zoo.engine.setup import build_recipe_data, fit_options, hardware_summary, sgd, start_run
from kd_zoo.hub import export_model, publish_folder, run_card_fields
from kd_zoo.zoo import weight_tag

DEMO = Path(__file__).parent / "configs" / "demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a model with cross-entropy.")
    parser.add_argument("--config", default=str(DEMO), help="a recipe YAML file (default: the embedded demo)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=10")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    if args.config == str(DEMO) and not any(o.startswith("run.output_dir=") for o in args.overrides):
        cfg.run.output_dir = "runs/demo_teacher"

    accelerator, run_dir = start_run(cfg, "train_teacher")
    data = build_recipe_data(accelerator, cfg, cfg.teacher.model)
    model = kd_zoo.create_model(cfg.teacher.model, num_classes=data.num_classes)

    trainable = Supervised(model)
    optimizer = sgd(trainable, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
    trainable, optimizer = accelerator.prepare(trainable, optimizer)
    result = fit(
        accelerator,
        trainable,
        optimizer,
        data.train_loader,
        data.eval_loader,
        run_dir=run_dir,
        **fit_options(cfg),
    )

    if accelerator.is_main_process:
        model = accelerator.unwrap_model(trainable).student
        fields = run_card_fields(
            result,
            model_id=f"{cfg.teacher.model}.{weight_tag('ce', None, data.name)}",
            dataset=data.name,
            dataset_revision=cfg.data.revision,
            summary=f"{cfg.teacher.model} trained with cross-entropy.",
            seed=cfg.train.seed,
            hardware=hardware_summary(accelerator),
            config_yaml=(run_dir / "config.yaml").read_text(),
        )
        (run_dir / "result.json").write_text(json.dumps({**result.to_dict(), "card": fields}, indent=2))
        folder = export_model(model, run_dir / "model", fields, label_names=data.class_names)
        print(
            f"\n{cfg.teacher.model}: top-1 best {result.best_top1:.2f} (epoch {result.best_epoch + 1}), "
            f"last {result.last_top1:.2f}; exported to {folder}"
        )
        if cfg.run.push_to_hub:
            publish_folder(folder, cfg.run.push_to_hub, dry_run=cfg.run.dry_run)
    accelerator.end_training()


if __name__ == "__main__":
    main()
