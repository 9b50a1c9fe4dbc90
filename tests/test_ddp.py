"""DistributedDataParallel with 2 CPU processes (gloo) through torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "ddp_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    # DDP keeps the replicas identical: same weights on both ranks after training
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    # both ranks saw the same (all-reduced) validation loss, and training worked
    assert [h["val_loss"] for h in ranks[0]["history"]] == pytest.approx([h["val_loss"] for h in ranks[1]["history"]])
    assert ranks[0]["accuracy"] > 0.7
