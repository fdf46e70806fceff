"""DistributedDataParallel on two real CPU processes (gloo), launched the way torchrun launches them:
through RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT environment variables."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = r"""
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from runtrace.models import make_classifier, TrainConfig
from runtrace.models.train import shutdown_distributed
from runtrace.represent.synthetic import synthetic_dataset
from runtrace.represent.windows import WindowConfig

out = sys.argv[1]
data = synthetic_dataset("ism", 24, min_length=20, max_length=80, seed=3)
clf = make_classifier(
    "ism",
    window=WindowConfig("sliding", length=16),
    train=TrainConfig(epochs=2, batch_size=4, lr=1e-2, progress=False, seed=0, device="cpu"),
)
clf.fit(data, np.arange(24))
rank = torch.distributed.get_rank()
weights = torch.cat([p.detach().flatten() for p in clf.net_.parameters()]).tolist()
result = {
    "rank": rank,
    "world": torch.distributed.get_world_size(),
    "backend": torch.distributed.get_backend(),
    "weights": weights,
    "steps": [h["steps"] for h in clf.training_log_],
    "val_loss": [h["val_loss"] for h in clf.training_log_],
    "proba": clf.predict_proba(data, np.arange(24)).tolist(),
}
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump(result, fh)
shutdown_distributed()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two fresh interpreters importing torch: ~10 s idle, more on a busy machine
def test_two_gloo_processes_train_in_lockstep(tmp_path: Path) -> None:
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            CUDA_VISIBLE_DEVICES="",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo"
    # DDP averaged the gradients: both ranks end with the same weights and the same early-stopping view.
    assert r0["weights"] == r1["weights"]
    assert r0["val_loss"] == r1["val_loss"]
    assert r0["proba"] == r1["proba"]
    assert r0["steps"] == r1["steps"] and min(r0["steps"]) >= 1
