"""Launched by test_faults_run.py under torchrun (2 gloo processes): rank 1 stops answering before the first gradient
average (SIGSTOP with DCANAS_TEST_FREEZE=stop, as a frozen peer; else a long sleep, which gloo sees the same way and
torchrun tears down at once); rank 0 must end within --dist-timeout with one line."""
import os
import signal
import sys

import torch

from dcanas import distributed
from dcanas.errors import UserError

rank, world = distributed.world()
p = torch.nn.Parameter(torch.ones(4))
p.grad = torch.full((4,), float(rank))
if rank == 1:
    if os.environ.get("DCANAS_TEST_FREEZE") == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        import time

        time.sleep(3600)
try:
    distributed.average_gradients([p], world)
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
print("no error", file=sys.stderr)
