"""QAT under ``torchrun --nproc_per_node=2`` (gloo, DDP): both ranks end bit-identical."""

import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_two_ranks_keep_identical_scales_statistics_and_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["local_range"] != r1["local_range"]  # the ranks really saw different data
    assert r0["state"].keys() == r1["state"].keys()
    differ = [k for k in r0["state"] if not torch.equal(r0["state"][k], r1["state"][k])]
    assert not differ, f"state differs across ranks: {differ}"
    for step, (h0, h1) in enumerate(zip(r0["history"], r1["history"], strict=True)):
        assert all(torch.equal(h0[n], h1[n]) for n in h0), f"scales differ after step {step}"
    assert torch.equal(r0["logits"], r1["logits"])
    bn_keys = [k for k in r0["state"] if k.endswith("bn.running_mean")]
    assert bn_keys and all(torch.isfinite(r0["state"][k]).all() for k in bn_keys)
