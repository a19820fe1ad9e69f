"""Distil a student from a teacher: any method, Label Revision on or off, Data Selection on or off.

    accelerate launch recipes/distill.py                      # the embedded demo: offline, CPU, a few minutes
    accelerate launch recipes/distill.py --config recipes/configs/cifar100/resnet32x4-resnet8x4/lrds.yaml
    accelerate launch --multi_gpu --num_processes 8 recipes/distill.py --config ... train.batch_size=512
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no recipes/distill.py train.epochs=1     # the 2-process CPU check of the distributed path

Steps: data -> teacher (loaded, or trained on the fly when none is given and the data is the demo) -> influence
scores (loaded from `selection.scores`, or computed) -> distill mask -> student + method + LR -> training with
evaluation and checkpoints -> the exported student folder with its model card -> a result table.
"""

import argparse
import json
from pathlib import Path

import kd_zoo
from kd_zoo.checkpoints import load_model, weights_fingerprint
from kd_zoo.config import load_config
from kd_zoo.engine import Distiller, Supervised
from kd_zoo.engine.loop import evaluate_accuracy, fit, scaled_milestones, step_lr
from kd_zoo.engine.setup import build_recipe_data, fit_options, hardware_summary, sgd, start_run
from kd_zoo.hub import export_model, publish_folder, run_card_fields
from kd_zoo.methods import create_method
from kd_zoo.revision import LabelRevision
from kd_zoo.selection import ScoreSet, score_dataset
from kd_zoo.zoo import weight_tag

DEMO = Path(__file__).parent / "configs" / "demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description="Distil a student from a teacher (LR + DS).")
    parser.add_argument("--config", default=str(DEMO), help="a recipe YAML file (default: the embedded demo)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=10")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    accelerator, run_dir = start_run(cfg, "distill")

    # Data: both splits, the loaders, the class names; normalised as the student expects.
    data = build_recipe_data(accelerator, cfg, cfg.student.model)

    # Teacher: given weights, or (demo only) trained here with cross-entropy for a few epochs, on the recipe's
    # decay schedule scaled to them.
    if cfg.teacher.weights is None and cfg.data.name is None:
        teacher = kd_zoo.create_model(cfg.teacher.model, num_classes=data.num_classes)
        trainable = Supervised(teacher)
        optimizer = sgd(trainable, cfg.teacher.train_lr, cfg.train.momentum, cfg.train.weight_decay)
        trainable, optimizer = accelerator.prepare(trainable, optimizer)
        fit(
            accelerator,
            trainable,
            optimizer,
            data.train_loader,
            data.eval_loader,
            num_epochs=cfg.teacher.train_epochs,
            lr_schedule=step_lr(cfg.teacher.train_lr, scaled_milestones(cfg.teacher.train_epochs)),
            run_dir=run_dir / "teacher",
            checkpoint_every=cfg.teacher.train_epochs,
            resume=cfg.run.resume,
            log_every=cfg.run.log_every,
            log_prefix="teacher/",
        )
        teacher = accelerator.unwrap_model(trainable).student
    else:
        teacher = load_model(cfg.teacher.model, cfg.teacher.weights)
    teacher = teacher.to(accelerator.device).eval()
    teacher_eval = evaluate_accuracy(accelerator, teacher, data.eval_loader)

    # Data Selection: a score per training sample, then the distill mask (True = supervised by the teacher).
    distill_mask, selection_info = None, "off"
    if cfg.selection.enabled:
        if cfg.selection.scores:
            scores = ScoreSet.load(cfg.selection.scores)
        else:
            scores = score_dataset(
                teacher,
                data.train_split,
                cfg.selection.scorer,
                batch_size=cfg.data.eval_batch_size,
                accelerator=accelerator,
                mean=data.mean,
                std=data.std,
                weights=cfg.teacher.weights,
                fraction=cfg.selection.fraction,
            )
            if accelerator.is_main_process:
                scores.save(run_dir / "scores", overwrite=True)
        aligned = scores.join(data.train_split, teacher)
        distill_mask = aligned.distill_mask(cfg.selection.fraction, cfg.selection.strategy, cfg.selection.seed)
        mistakes = aligned.mistakes(cfg.selection.fraction, cfg.selection.seed)
        selection_info = (
            f"{cfg.selection.scorer}, {cfg.selection.strategy} {cfg.selection.fraction:.0%} "
            f"({int(distill_mask.sum())}/{data.num_train} distilled); the teacher is wrong on "
            f"{mistakes['count']} training samples, {mistakes['in_distilled'][cfg.selection.strategy]} "
            "of them distilled"
        )

    # Student, method (sized from the models' feature_info), Label Revision.
    student = kd_zoo.create_model(cfg.student.model, num_classes=data.num_classes, drop_rate=cfg.student.drop_rate)
    method = create_method(cfg.method.name, student, teacher, **cfg.method.args)
    lr = cfg.label_revision
    revision = LabelRevision(lr.eta, lr.lambda1, lr.lambda2) if lr.enabled else None
    distiller = Distiller(student, method, revision, ds_weighting=cfg.train.ds_weighting)
    optimizer = sgd(distiller, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
    distiller, optimizer = accelerator.prepare(distiller, optimizer)

    result = fit(
        accelerator,
        distiller,
        optimizer,
        data.train_loader,
        data.eval_loader,
        teacher=teacher,
        distill_mask=distill_mask,
        run_dir=run_dir,
        **fit_options(cfg),
    )

    if accelerator.is_main_process:
        student = accelerator.unwrap_model(distiller).student
        parts = (
            [cfg.method.name] + ["Label Revision"] * bool(revision) + ["Data Selection"] * (distill_mask is not None)
        )
        teacher_print = weights_fingerprint(teacher)
        tag = weight_tag(cfg.method.name, cfg.teacher.model, data.name, revision is not None, distill_mask is not None)
        fields = run_card_fields(
            result,
            model_id=f"{cfg.student.model}.{tag}",
            summary=f"{cfg.student.model} distilled from {cfg.teacher.model} with {' + '.join(parts)}.",
            dataset=data.name,
            dataset_revision=cfg.data.revision,
            seed=cfg.train.seed,
            teacher=f"{cfg.teacher.model} (top-1 {teacher_eval['top1']:.2f}, weights {teacher_print[:16]})",
            method=f"{cfg.method.name} {cfg.method.args or ''}".strip(),
            label_revision=repr(revision) if revision else "off",
            data_selection=selection_info,
            hardware=hardware_summary(accelerator),
            config_yaml=(run_dir / "config.yaml").read_text(),
        )
        summary = {**result.to_dict(), "teacher_top1": teacher_eval["top1"], "card": fields}
        (run_dir / "result.json").write_text(json.dumps(summary, indent=2))
        folder = export_model(student, run_dir / "model", fields, label_names=data.class_names)
        rows = [
            ("teacher " + cfg.teacher.model, f"{teacher_eval['top1']:.2f}", "", ""),
            (
                "student " + cfg.student.model,
                f"{result.best_top1:.2f}",
                f"{result.last_top1:.2f}",
                f"{result.train_seconds:.0f} s",
            ),
        ]
        print(f"\n{'model':<34}{'top-1 best':>11}{'top-1 last':>11}{'time':>8}")
        for row in rows:
            print(f"{row[0]:<34}{row[1]:>11}{row[2]:>11}{row[3]:>8}")
        print(f"method {cfg.method.name}, LR {'on' if revision else 'off'}, DS {selection_info}")
        print(f"exported student: {folder}")
        if cfg.run.push_to_hub:
            publish_folder(folder, cfg.run.push_to_hub, dry_run=cfg.run.dry_run)
    accelerator.end_training()


if __name__ == "__main__":
    main()
