"""Validate a model on an evaluation split: top-1, top-5, loss, images per second and parameters, as timm's validate.py.

    python recipes/validate.py runs/demo/model                          # an exported folder, on the demo digits
    python recipes/validate.py lrds_resnet8 weights=runs/demo/model     # the same, naming the architecture
    accelerate launch recipes/validate.py lrds_resnet32x4.cifar100 data=uoft-cs/cifar100
    python recipes/validate.py hf-hub:kd-zoo/lrds_resnet8x4.lrds_resnet32x4_cifar100 data=cifar100
    python recipes/validate.py model.safetensors arch=lrds_resnet8x4 data=cifar100
    python recipes/validate.py ckpt_epoch_240.pth arch=resnet32x4 data=cifar100   # a CRD / mdistiller file
    python recipes/validate.py --help                                   # every option, with its type and default
    # several processes (each sample counted once): accelerate launch --num_processes 8 recipes/validate.py ...

The model is any zoo name (its default weights), a tag (`arch.tag`), an `hf-hub:` id, an exported folder, a
training checkpoint folder, a `.safetensors` file or a reference `.pth` checkpoint (`arch` names the architecture
where the source does not record it). Images are preprocessed as the model's data config says. Without `data` the
embedded demo digits are used (offline). The result is written as JSON (`output`) and summed up in one line.
"""

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from kd_zoo import weights_fingerprint
from kd_zoo.config import NON_NEGATIVE, POSITIVE, ConfigTree, option, parse_recipe_args
from kd_zoo.engine import validate_model
from kd_zoo.hub import public_dataset_name, public_path
from kd_zoo.loading import load_model_source
from kd_zoo.version import __version__
from kd_zoo.workflow import run_main


@dataclass
class ValidateConfig(ConfigTree):
    model: str = option("runs/demo/model", "a zoo name or tag, hf-hub:ORG/NAME, a folder, .safetensors or .pth")
    weights: str | None = option(None, "weights for `model` when it names an architecture")
    arch: str | None = option(None, "the architecture of a .safetensors / .pth file (lrds_resnet32x4, resnet32x4)")
    num_classes: int | None = option(
        None, "the weights' class count where the source does not record it", check=POSITIVE
    )
    prefix: str | None = option(None, "a reference checkpoint's tensors under this prefix (module.student.)")
    data: str | None = option(None, "the data set (a Hub id, cifar100, a folder, parquet files); null: the demo")
    split: str = option("test", "the evaluation split")
    revision: str | None = option(None, "the data set's Hub revision")
    label: str = option("fine", "the label column (CIFAR-100: fine or coarse)")
    batch_size: int = option(256, "global evaluation batch size", check=POSITIVE)
    num_workers: int = option(4, "data-loading workers (large images only)", check=NON_NEGATIVE)
    channels_last: bool = option(False, "channels-last memory format")
    mixed_precision: str = option("no", "autocast precision", choices=("no", "fp16", "bf16"))
    cpu: bool = option(False, "run on the CPU even when a GPU is there")
    output: str | None = option(None, "the JSON result (default: validate_<model>_<data>.json)")


def validate(cfg: ValidateConfig, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Evaluate `cfg.model` on `cfg.data` / `cfg.split`; returns the result (also written to `cfg.output`)."""
    accelerator = accelerator or Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
    source = cfg.weights or cfg.model
    arch = cfg.arch or (cfg.model if cfg.weights else None)
    model = load_model_source(source, arch=arch, num_classes=cfg.num_classes, prefix=cfg.prefix)
    metrics = validate_model(
        accelerator,
        model,
        cfg.data,
        cfg.split,
        batch_size=cfg.batch_size,
        revision=cfg.revision,
        label=cfg.label,
        num_workers=cfg.num_workers,
        channels_last=cfg.channels_last,
    )
    metrics["data"] = public_dataset_name(metrics["data"])
    result = {
        "model": model.pretrained_cfg.get("architecture"),
        "tag": model.pretrained_cfg.get("tag") or None,
        "weights": public_path(source),
        "weights_fingerprint": weights_fingerprint(model),
        **metrics,
        "param_count": sum(p.numel() for p in model.parameters()),
        "num_classes": model.num_classes,
        "kd_zoo_version": __version__,
        "options": {k: public_path(v) if isinstance(v, str) else v for k, v in asdict(cfg).items()},
    }
    if accelerator.is_main_process:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(result['weights'].rstrip('/')).name}_{metrics['data']}")
        output = Path(cfg.output or f"validate_{slug.strip('-')}.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{result['model']} ({result['weights']}) on {result['data']}/{result['split']}: "
            f"top-1 {result['top1']:.2f} top-5 {result['top5']:.2f} loss {result['loss']:.4f}, "
            f"{result['count']} images, {result['images_per_second']:.0f} img/s on {result['hardware']}, "
            f"{result['param_count']:,} params "
            f"-> {output}"
        )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return validate(parse_recipe_args(__doc__.splitlines()[0], None, argv, ValidateConfig, primary="model"))


if __name__ == "__main__":
    run_main(main)
