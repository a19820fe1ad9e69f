"""Import a CRD / mdistiller CIFAR checkpoint as a zoo model folder: safetensors, timm config.json, model card.

The CIFAR-100 teachers of the KD literature (`<name>_vanilla/ckpt_epoch_240.pth`, from CRD's
`scripts/fetch_pretrained_teachers.sh` or mdistiller's `cifar_teachers.tar`) become `lrds_<name>.cifar100`:

    python recipes/import_checkpoint.py download_ckpts/cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth \
        data=uoft-cs/cifar100 origin=https://github.com/megvii-research/mdistiller/releases/tag/checkpoints
    # -> imported/lrds_resnet32x4.cifar100/, evaluated on the CIFAR-100 test split (a few minutes on a CPU)
    python recipes/import_checkpoint.py ... push_to_hub=kd-zoo/lrds_resnet32x4.cifar100 dry_run=true
    python recipes/import_checkpoint.py --help                     # every option, with its type and default

The architecture comes from the `<name>_vanilla` folder, or `arch` (`resnet32x4`, `wrn_40_2`, `ResNet50`, or the zoo
name). The file is read with `torch.load(weights_only=True)` only; a file that needs code to unpickle is refused.
The model card names the file's sha256, its origin, what the file records (epoch, accuracy) and, with `data`, the
top-1 / top-5 measured here (as `recipes/validate.py` measures them); without `data` nothing is measured, the card
says so and has no model-index. The folder then loads anywhere: `kd_zoo.load_model(None, folder)`,
`timm.create_model("local-dir:<folder>", pretrained=True)`.
"""

from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator

from kd_zoo.config import NON_NEGATIVE, POSITIVE, ConfigError, ConfigTree, option, parse_recipe_args
from kd_zoo.constants import HF_ORG
from kd_zoo.engine import validate_model
from kd_zoo.hub import export_model, imported_card_fields, publish_folder, resolve_token
from kd_zoo.models import checkpoint_arch, load_reference_checkpoint, read_reference_checkpoint
from kd_zoo.workflow import run_main


@dataclass
class ImportConfig(ConfigTree):
    checkpoint: str = option("ckpt_epoch_240.pth", "the reference .pth file")
    arch: str | None = option(None, "the architecture (default: from the <name>_vanilla folder)")
    num_classes: int | None = option(None, "the class count to expect (default: the file's)", check=POSITIVE)
    prefix: str | None = option(None, "take the tensors under this prefix (module.student.)")
    origin: str | None = option(None, "where the file came from (a URL), for the model card")
    model_id: str | None = option(None, "default: lrds_<arch>.cifar100, the zoo's teacher tag")
    output_dir: str | None = option(None, "default: imported/<model_id>")
    overwrite: bool = option(False, "replace an existing output folder")
    data: str | None = option(None, "evaluate on this data set (cifar100, a folder, ...); null: no evaluation")
    split: str = option("test", "the evaluation split")
    revision: str | None = option(None, "the data set's Hub revision")
    label: str = option("fine", "the label column (CIFAR-100: fine or coarse)")
    batch_size: int = option(256, "global evaluation batch size", check=POSITIVE)
    num_workers: int = option(4, "data-loading workers (large images only)", check=NON_NEGATIVE)
    cpu: bool = option(False, "run on the CPU even when a GPU is there")
    push_to_hub: str | None = option(None, "publish the folder to this Hub repo, ORG/NAME")
    dry_run: bool = option(False, "with push_to_hub: print what would be uploaded, upload nothing")

    def validate(self) -> "ImportConfig":
        if self.dry_run and not self.push_to_hub:
            raise ConfigError("dry_run=true needs push_to_hub=ORG/NAME (it previews that upload)")
        if self.push_to_hub and self.data is None:
            raise ConfigError("push_to_hub needs data=...: a published model card carries accuracy measured here")
        return self


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_recipe_args(__doc__.splitlines()[0], None, argv, ImportConfig, primary="checkpoint")
    arch = checkpoint_arch(cfg.checkpoint, cfg.arch)
    model_id = cfg.model_id or f"{arch}.cifar100"
    folder = Path(cfg.output_dir or Path("imported") / model_id)
    if folder.exists() and any(folder.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"{folder} is not empty: pass overwrite=true to replace it, or another output_dir=...")
    if cfg.push_to_hub and not cfg.dry_run:
        resolve_token()  # refuse before any work when there is no token
    accelerator = Accelerator(cpu=cfg.cpu)
    ckpt = read_reference_checkpoint(cfg.checkpoint, prefix=cfg.prefix)
    model = load_reference_checkpoint(arch, ckpt, num_classes=cfg.num_classes)
    metrics = None
    if cfg.data is not None:
        options = dict(batch_size=cfg.batch_size, revision=cfg.revision, label=cfg.label, num_workers=cfg.num_workers)
        metrics = validate_model(accelerator, model, cfg.data, cfg.split, **options)
    if accelerator.is_main_process:
        repo_id = cfg.push_to_hub or f"{HF_ORG}/{model_id}"
        fields = imported_card_fields(ckpt, arch, model_id, repo_id, metrics, origin=cfg.origin, prefix=cfg.prefix)
        export_model(model.cpu(), folder, fields)
        measured = (
            f": top-1 {metrics['top1']:.2f} top-5 {metrics['top5']:.2f} on {fields['dataset']}" if metrics else ""
        )
        print(f"{ckpt.path.name} (sha256 {ckpt.sha256[:12]}) -> {arch} -> {folder}{measured or ' (not evaluated)'}")
        if cfg.push_to_hub:
            publish_folder(folder, cfg.push_to_hub, dry_run=cfg.dry_run)
    accelerator.wait_for_everyone()
    return folder


if __name__ == "__main__":
    run_main(main)
