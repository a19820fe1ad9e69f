"""Distil a student from a teacher: any method, Label Revision on or off, Data Selection on or off.

    accelerate launch recipes/distill.py                      # the embedded demo: offline, CPU, a few minutes
    accelerate launch recipes/distill.py --config recipes/configs/cifar100/resnet32x4-resnet8x4/lrds.yaml
    accelerate launch --multi_gpu --num_processes 8 recipes/distill.py --config ... --train.batch_size 512
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no recipes/distill.py train.epochs=1     # the 2-process CPU check of the distributed path
    python recipes/distill.py --help                          # every config key, with its type and default

Steps: data -> teacher (loaded, or trained on the fly when none is given and the data is the demo) -> its output
cache (`teacher.cache`, optional: the student then never runs the teacher) -> influence scores (loaded from
`selection.scores`, or computed) -> distill mask -> student + method + LR -> training with evaluation and
checkpoints -> the exported student folder with its model card -> a result table.
"""

from pathlib import Path

from kd_zoo.config import parse_recipe_args
from kd_zoo.engine import fit, sgd
from kd_zoo.hub import publish_folder
from kd_zoo.workflow import (
    build_distiller,
    data_selection,
    distilled_card_fields,
    export_trained,
    fit_options,
    open_teacher_cache,
    prepare_teacher,
    result_table,
    run_data,
    run_main,
    start_run,
    teacher_accuracy,
)

DEMO = Path(__file__).parent / "configs" / "demo.yaml"


def main() -> None:
    cfg = parse_recipe_args("Distil a student from a teacher (LR + DS).", DEMO)
    with start_run(cfg, "distill") as (accelerator, run_dir):
        data = run_data(accelerator, cfg, cfg.student.model)  # preprocessed as the student expects
        teacher = prepare_teacher(cfg, accelerator, data, run_dir)
        teacher_top1 = teacher_accuracy(accelerator, teacher, data)  # fed as it expects (its own mean / std)
        cache = open_teacher_cache(cfg, accelerator, teacher, data)  # None: the live teacher
        selection = data_selection(cfg, accelerator, teacher, data, run_dir, cache)  # None with DS off

        distiller = build_distiller(cfg, teacher, data, cache)
        optimizer = sgd(distiller, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
        distiller, optimizer = accelerator.prepare(distiller, optimizer)
        options = fit_options(cfg, f"student {cfg.student.model}")
        mask = selection.mask if selection is not None else None
        result = fit(
            accelerator,
            distiller,
            optimizer,
            data.train_loader,
            data.eval_loader,
            options,
            run_dir=run_dir,
            teacher=None if cache is not None else teacher,
            distill_mask=mask,
        )

        if accelerator.is_main_process:
            student = accelerator.unwrap_model(distiller).student
            fields = distilled_card_fields(
                cfg, accelerator, run_dir, result, data, teacher=teacher, teacher_top1=teacher_top1,
                selection=selection, cache=cache,
            )  # fmt: skip
            folder = export_trained(run_dir, student, result, data, fields, teacher_top1=teacher_top1)
            best, last, seconds = f"{result.best_top1:.2f}", f"{result.last_top1:.2f}", f"{result.train_seconds:.0f} s"
            rows = [
                (f"teacher {cfg.teacher.model}", f"{teacher_top1:.2f}", "", ""),
                (f"student {cfg.student.model}", best, last, seconds),
            ]
            print("\n" + result_table(rows))
            ds = selection.summary if selection is not None else "off"
            print(f"method {cfg.method.name}, LR {'on' if cfg.label_revision.enabled else 'off'}, DS {ds}")
            if folder is not None:
                print(f"exported student: {folder}")
                if cfg.run.push_to_hub:
                    publish_folder(folder, cfg.run.push_to_hub, dry_run=cfg.run.dry_run)


if __name__ == "__main__":
    run_main(main)
