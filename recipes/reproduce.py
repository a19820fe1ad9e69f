"""Reproduce the paper's Tables II-IX: run the configs behind a row (or a whole table) over seeds, beside the paper.

    python recipes/reproduce.py --list                                   # the tables, their rows and configs
    python recipes/reproduce.py --table VIII --dry-run                   # a whole table: print the commands only
    python recipes/reproduce.py --table V --row "PKT + LR + DS (LDA)" --seeds 0 1 2
    python recipes/reproduce.py --table IV --row "Our (KD + LR + DS)" --column resnet32x4-resnet8x4 \\
        --launcher "accelerate launch --multi_gpu --num_processes 4"

Each row of recipes/paper_results.yaml names its config (`variant`: `configs/<dataset>/<column>/<variant>.yaml`;
or `config`, with the column's `{teacher}` / `{student}`), the recipe that runs it (recipes/distill.py, or
recipes/train_teacher.py for the teacher and student baselines) and the settings the paper gives it. Each (config,
seed) is one run in `--runs-dir/<config path>/seed<seed>` with `train.seed=<seed>`: rows that share a config share
its runs (Table III's KD + LR + DS is Table VIII's lambda1 = 1 cell and Table IX's eta = 0.8 cell), and finished
runs are reused, so an interrupted reproduction continues. The seeds default to the paper's trials (3 on CIFAR-100,
1 on ImageNet).

The report sets, for every row and column, the paper's number beside ours (mean +- std of the last and the best
epoch over the seeds, their count and the difference); it is printed and written to `--runs-dir/<table>.md`
(`<table>_<row>.md` for chosen rows). `--set key=value` adds overrides to every run (for example a local teacher:
`--set teacher.weights=runs/cifar100/teachers/resnet32x4/model`); `--dry-run` prints the commands and runs nothing.
"""

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
PAPER = ROOT / "paper_results.yaml"
CONFIGS = ROOT / "configs"
RECIPES = {"distill": ROOT / "distill.py", "train_teacher": ROOT / "train_teacher.py"}
METRICS = ("top1", "teacher_top1")


@dataclass(frozen=True)
class Run:
    """One row's run set for one column: the config, the recipe that runs it, and where its runs go."""

    config: Path
    recipe: str
    metric: str

    def run_dir(self, runs_dir: Path, seed: int) -> Path:
        return runs_dir / self.config.relative_to(CONFIGS).with_suffix("") / f"seed{seed}"


def load_tables() -> dict:
    return yaml.safe_load(PAPER.read_text())


def find_table(tables: dict, table: str) -> dict:
    if table not in tables:
        raise SystemExit(f"unknown table {table!r}; tables: {', '.join(tables)}")
    return tables[table]


def find_row(tables: dict, table: str, row: str) -> dict:
    rows = find_table(tables, table)["rows"]
    for entry in rows:
        if entry["name"] == row:
            return entry
    names = "; ".join(r["name"] for r in rows)
    raise SystemExit(f"table {table} has no row {row!r}; its rows: {names}")


def resolve(dataset: str, column: str, row: dict) -> Run:
    """The config, recipe and metric of `row` in `column` (a `teacher-student` pair of `dataset`)."""
    if ("variant" in row) == ("config" in row):
        raise SystemExit(f"row {row['name']!r} of paper_results.yaml needs exactly one of 'variant' and 'config'")
    if "variant" in row:
        config = CONFIGS / dataset / column / f"{row['variant']}.yaml"
    else:
        teacher, student = column.split("-")
        config = CONFIGS / dataset / f"{row['config'].format(teacher=teacher, student=student)}.yaml"
    recipe, metric = row.get("recipe", "distill"), row.get("metric", "top1")
    if recipe not in RECIPES or metric not in METRICS:
        raise SystemExit(
            f"row {row['name']!r}: recipe must be one of {list(RECIPES)} and metric one of {list(METRICS)}, "
            f"got {recipe!r} and {metric!r}"
        )
    return Run(config, recipe, metric)


def run_one(launcher: list[str], run: Run, run_dir: Path, seed: int, extra: list[str], dry_run: bool) -> dict | None:
    result = run_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    command = [
        *launcher,
        str(RECIPES[run.recipe]),
        "--config",
        str(run.config),
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


def report_lines(
    row: dict, columns: list[str], paper: dict[str, float], results: dict[str, list[dict]], metric: str
) -> Iterator[str]:
    """One line per column: the paper beside our last / best epoch (the teacher's accuracy for `teacher_top1`)."""
    for column in columns:
        runs = results.get(column, [])
        last = [r["last_top1" if metric == "top1" else metric] for r in runs]
        best = [r["best_top1" if metric == "top1" else metric] for r in runs]
        diff = f"{statistics.mean(last) - paper[column]:+.2f}" if last else "-"
        cells = [row["name"], column, f"{paper[column]:.2f}", _stats(last), _stats(best), str(len(runs)), diff]
        yield "| " + " | ".join(cells) + " |"


def report(table: str, entry: dict, rows: list[dict], columns: list[str], results: dict) -> str:
    lines = [
        f"# Table {table}: the paper vs this reproduction",
        "",
        f"{entry.get('caption', '')}",
        "",
        "| row | column | paper | ours, last epoch | ours, best epoch | n | last - paper |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        paper = dict(zip(entry["columns"], row["paper"], strict=True))
        lines += report_lines(row, columns, paper, results[row["name"]], row.get("metric", "top1"))
    lines += ["", "Configs (recipes/configs/):"]
    for row in rows:
        configs = sorted({str(resolve(entry["dataset"], c, row).config.relative_to(CONFIGS)) for c in columns})
        lines.append(f"- {row['name']}: {', '.join(configs)}")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def list_tables(tables: dict) -> None:
    for name, table in tables.items():
        print(f"Table {name} ({table['dataset']}, {table['trials']} trial(s)): columns {', '.join(table['columns'])}")
        for row in table["rows"]:
            run = resolve(table["dataset"], table["columns"][0], row)
            where = f"{row.get('variant') or row['config']}.yaml"
            how = [x for x in (run.recipe, run.metric) if x not in ("distill", "top1")]
            print(f"  {row['name']!r} -> {where}" + (f" ({', '.join(how)})" if how else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="II to IX (see --list); without --row, every row of the table")
    parser.add_argument("--row", action="append", help="a row name of that table (repeatable; see --list)")
    parser.add_argument("--column", action="append", help="restrict to these pairs (default: every column)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the paper's trials (0 1 2)")
    parser.add_argument("--runs-dir", default="runs/reproduce")
    parser.add_argument("--launcher", default="accelerate launch", help="how to start the recipes")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="override for every run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--list", action="store_true", help="list the tables and rows")
    args = parser.parse_args()
    tables = load_tables()
    if args.list or not args.table:
        list_tables(tables)
        return

    entry = find_table(tables, args.table)
    rows = [find_row(tables, args.table, name) for name in args.row] if args.row else entry["rows"]
    columns = args.column or entry["columns"]
    unknown = [c for c in columns if c not in entry["columns"]]
    if unknown:
        raise SystemExit(f"unknown column(s) {unknown} for table {args.table}; columns: {', '.join(entry['columns'])}")
    seeds = args.seeds if args.seeds is not None else list(range(entry["trials"]))
    launcher = shlex.split(args.launcher)
    if launcher and launcher[0] == "python":
        launcher[0] = sys.executable
    runs_dir = Path(args.runs_dir)
    plan = {(row["name"], column): resolve(entry["dataset"], column, row) for row in rows for column in columns}
    missing = sorted({str(run.config) for run in plan.values() if not run.config.is_file()})
    if missing:
        raise SystemExit(f"missing config(s) {missing}: run recipes/make_configs.py")
    results: dict[str, dict[str, list[dict]]] = {row["name"]: {} for row in rows}
    done: dict[Path, dict | None] = {}  # rows that share a config share its runs
    for (name, column), run in plan.items():
        for seed in seeds:
            run_dir = run.run_dir(runs_dir, seed)
            if run_dir not in done:
                done[run_dir] = run_one(launcher, run, run_dir, seed, args.overrides, args.dry_run)
            if done[run_dir] is not None:
                results[name].setdefault(column, []).append(done[run_dir])
    if args.dry_run:
        return
    text = report(args.table, entry, rows, columns, results)
    suffix = "_".join(_slug(r["name"]) for r in rows) if args.row else ""
    out = runs_dir / (f"{args.table}_{suffix}.md" if suffix else f"{args.table}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
