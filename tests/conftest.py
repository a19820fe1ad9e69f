"""Test-wide settings: never touch the network or the user's caches."""

import os
import tempfile

# Set before huggingface_hub / datasets are imported: both read these once, at import time.
_CACHE_ROOT = tempfile.mkdtemp(prefix="kd_zoo_test_cache_")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HOME"] = os.path.join(_CACHE_ROOT, "hf")
os.environ["KD_ZOO_CACHE"] = os.path.join(_CACHE_ROOT, "kd_zoo")
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads starve each other
# (a ResNet-110 forward of 4 images: 4.9 s spinning, 0.06 s passive). Read when torch loads, so set it here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
