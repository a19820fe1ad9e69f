"""The distributed path for real: `recipes/distill.py` in 2 CPU processes (gloo), as in the README.

Checks that the run completes with DS scoring sharded over both processes, that both ranks end with identical
weights (the loop verifies it and says so), and that evaluation counts every test sample exactly once.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_distill(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "recipes/distill.py",
        "teacher.model=lrds_resnet8",
        "teacher.train_epochs=1",
        "student.model=lrds_resnet8",
        "train.epochs=1",
        "train.batch_size=64",
        "run.num_processes=2",
        f"run.output_dir={run_dir}",
        "run.log_every=5",
    ]
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "all 2 processes hold identical student weights" in output
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/eval_count" in r]
    assert evals and all(r["eval/eval_count"] == 360 for r in evals)
    assert (run_dir / "scores" / "README.md").is_file() and (run_dir / "model" / "model.safetensors").is_file()
