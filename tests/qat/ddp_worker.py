"""One rank of the DDP QAT test: ``torchrun --standalone --nproc_per_node=2 ddp_worker.py OUT_DIR``.

Each rank trains on its own batches (seeded by rank) with ``broadcast_buffers=False``,
so only the QAT synchronisation (not DDP's buffer broadcast) can keep the ranks equal.
It saves its final state, its scales after every step and its first local batch range.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import compress
from compress.models import MnistCNN
from quant import quantizers


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # identical model on every rank
    model = MnistCNN(width=4).eval()
    g = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    data = [(torch.randn(8, 1, 28, 28, generator=g) * (1 + rank), torch.randint(0, 10, (8,), generator=g))
            for _ in range(6)]
    qat = compress.prepare_qat(model, data[0][0], calib_loader=data[:2], progress=False,
                               freeze_bn_after=3, freeze_observers_after=4)
    ddp = DistributedDataParallel(qat, broadcast_buffers=False)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    history = []
    for x, y in data:
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({n: m.scale.clone() for n, m in quantizers(qat)})
    qat.eval()
    torch.save({"state": qat.state_dict(), "history": history, "logits": qat(data[0][0] * 0 + 1),
                "local_range": (float(data[0][0].min()), float(data[0][0].max()))}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
