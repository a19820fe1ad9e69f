"""List the kd_zoo model zoo: every architecture with its parameters, stage outputs and weight tags.

python recipes/list_zoo.py            # the table, built from the timm registry
python recipes/list_zoo.py --markdown # the same as a markdown table
"""

import argparse

import timm
import torch

import kd_zoo
from kd_zoo.pairs import pretrained_tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--num-classes", type=int, default=100)
    args = parser.parse_args()

    rows = []
    x = torch.zeros(1, 3, 32, 32)
    for name in kd_zoo.list_models():
        model = timm.create_model(name, num_classes=args.num_classes).eval()
        with torch.no_grad():
            stages = model.forward_intermediates(x, intermediates_only=True)
            logits = model(x)
        assert logits.shape == (1, args.num_classes)
        params = sum(p.numel() for p in model.parameters())
        shapes = ", ".join("x".join(map(str, f.shape[1:])) for f in stages)
        tags = ", ".join(pretrained_tags(name))
        rows.append((name, f"{params:,}", shapes, str(model.num_features), tags))

    header = ("model", "params", "stage outputs", "pooled", "weight tags (default first)")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
        for row in (header, *rows):
            print("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    print(f"\n{len(rows)} architectures; each ran a forward pass on a 3x32x32 input.")


if __name__ == "__main__":
    main()
