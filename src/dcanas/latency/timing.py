"""How the latency build times each model on the device (torch-free: the CLI reads its defaults)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class Timing:
    """How each model is timed on the device: ``rounds`` interleaved rounds, each ``warmup`` runs then
    at least ``runs`` runs and ``min_seconds`` (the p50 kept); the model's figure is the lowest p50 of the
    rounds. The time floor matters for models of microseconds: on `local` (onnxruntime, 2 threads) 20
    runs per round left a repeat-to-repeat CV of 2.2% and rank agreement between two rounds of 0.95-0.97
    over 50 networks; 0.05 s per round (~100-2,000 runs) with 20 warm-up runs gave 0.7-1.0% and 0.98-0.99.

    A slow phase of the machine can outlast all the rounds of a chunk: at 2 threads a held-out set of 30
    networks read 10-47% above its floor in most rounds, and the two sets' fastest-round figures ranked each
    other at 0.922 (5 rounds; 0.856 with 4, 0.774 with 3). So a model whose two fastest rounds differ by more
    than ``confirm`` is timed in more rounds, up to ``max_rounds`` (3x ``rounds`` unless given)."""
    runs: int = 20
    rounds: int = 5
    warmup: int = 20
    min_seconds: float = 0.05
    confirm: float = 0.02
    max_rounds: int = 0

    @property
    def rounds_at_most(self) -> int:
        return self.max_rounds or 3 * self.rounds

    def check(self) -> "Timing":
        if self.runs < 1 or self.rounds < 1 or self.warmup < 0 or self.min_seconds < 0 or self.confirm < 0 or self.max_rounds < 0:
            raise UserError(f"--runs and --rounds must be >= 1, --min-seconds, --confirm and --max-rounds >= 0 (got runs {self.runs}, "
                            f"rounds {self.rounds}, min-seconds {self.min_seconds}, confirm {self.confirm}, max-rounds {self.max_rounds})")
        return self
