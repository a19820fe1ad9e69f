"""Reproduce a row of the paper's Tables III-VII: run its configs over N seeds and set our numbers beside the paper's.

    python recipes/reproduce.py --list                                   # the tables and their rows
    python recipes/reproduce.py --table V --row "PKT + LR + DS (LDA)" --seeds 0 1 2
    python recipes/reproduce.py --table IV --row "Ours (KD + LR + DS)" --column resnet32x4-resnet8x4 \\
        --launcher "accelerate launch --multi_gpu --num_processes 4"
    python recipes/reproduce.py --table V --row "DKD (OA)" --dry-run    # print the commands only

Each (column, seed) is one `recipes/distill.py` run of `recipes/configs/<dataset>/<column>/<variant>.yaml` with
`train.seed=<seed>` in `--runs-dir/<table>/<column>/<variant>/seed<seed>` (finished runs are reused, so an
interrupted reproduction continues). The table (paper, ours mean +- std of the last and best epoch, n, difference)
is written to `--runs-dir/<table>_<variant>.md` and printed. `--set key=value` adds overrides to every run (for
example a local teacher: `--set teacher.weights=runs/cifar100/teachers/resnet32x4/model`).
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
PAPER = ROOT / "paper_results.yaml"
CONFIGS = ROOT / "configs"


def load_tables() -> dict:
    return yaml.safe_load(PAPER.read_text())


def find_row(tables: dict, table: str, row: str) -> dict:
    if table not in tables:
        raise SystemExit(f"unknown table {table!r}; tables: {', '.join(tables)}")
    rows = tables[table]["rows"]
    for entry in rows:
        if entry["name"] == row:
            return entry
    names = "; ".join(r["name"] for r in rows)
    raise SystemExit(f"table {table} has no row {row!r}; its rows: {names}")


def run_one(
    launcher: list[str], config: Path, run_dir: Path, seed: int, extra: list[str], dry_run: bool
) -> dict | None:
    result = run_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    command = [
        *launcher,
        str(ROOT / "distill.py"),
        "--config",
        str(config),
        f"train.seed={seed}",
        f"run.output_dir={run_dir}",
        *extra,
    ]
    print("$ " + shlex.join(command), flush=True)
    if dry_run:
        return None
    subprocess.run(command, check=True)
    return json.loads(result.read_text())


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def report(table: str, row: dict, columns: list[str], paper: dict[str, float], results: dict[str, list[dict]]) -> str:
    lines = [
        f"# Table {table}, {row['name']} (`{row['variant']}`): the paper vs this reproduction",
        "",
        "| column | paper | ours, last epoch | ours, best epoch | n | last - paper |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for column in columns:
        runs = results.get(column, [])
        last = [r["last_top1"] for r in runs]
        best = [r["best_top1"] for r in runs]
        diff = f"{statistics.mean(last) - paper[column]:+.2f}" if last else "-"
        lines.append(f"| {column} | {paper[column]:.2f} | {_stats(last)} | {_stats(best)} | {len(runs)} | {diff} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="III, IV, V, VI or VII")
    parser.add_argument("--row", help="a row name of that table (see --list)")
    parser.add_argument("--column", action="append", help="restrict to these pairs (default: every column)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", default="runs/reproduce")
    parser.add_argument("--launcher", default="accelerate launch", help="how to start recipes/distill.py")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="override for every run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--list", action="store_true", help="list the tables and rows")
    args = parser.parse_args()
    tables = load_tables()
    if args.list or not (args.table and args.row):
        for name, table in tables.items():
            print(f"Table {name} ({table['dataset']}): columns {', '.join(table['columns'])}")
            for row in table["rows"]:
                print(f"  {row['name']!r} -> {row['variant']}.yaml")
        return

    table = tables[args.table] if args.table in tables else None
    row = find_row(tables, args.table, args.row)
    paper = dict(zip(table["columns"], row["paper"], strict=True))
    columns = args.column or table["columns"]
    unknown = [c for c in columns if c not in paper]
    if unknown:
        raise SystemExit(f"unknown column(s) {unknown} for table {args.table}; columns: {', '.join(paper)}")
    launcher = shlex.split(args.launcher)
    if launcher and launcher[0] == "python":
        launcher[0] = sys.executable
    results: dict[str, list[dict]] = {}
    for column in columns:
        config = CONFIGS / table["dataset"] / column / f"{row['variant']}.yaml"
        if not config.is_file():
            raise SystemExit(f"missing config {config}: run recipes/make_configs.py")
        for seed in args.seeds:
            run_dir = Path(args.runs_dir) / args.table / column / row["variant"] / f"seed{seed}"
            result = run_one(launcher, config, run_dir, seed, args.overrides, args.dry_run)
            if result is not None:
                results.setdefault(column, []).append(result)
    if args.dry_run:
        return
    text = report(args.table, row, columns, paper, results)
    out = Path(args.runs_dir) / f"{args.table}_{row['variant']}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
