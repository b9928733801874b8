"""What a forward pass costs, in padded tokens: the figures batch planning uses.

A pass of n texts padded to L tokens costs about `overhead + n * L` token-times:
the overhead is reading every weight once and launching every op. The coalescer
and the Python-backend model (which keeps its own copy of `plan_groups`) both
plan with these. Measurements behind them: bench/results.
"""

import logging

log = logging.getLogger(__name__)

# A DistilBERT pass's overhead on CPU. On a GPU a pass is nearly free per token
# and costly per launch: the coalescer's learned figure (PassCostModel) grows to
# thousands there, so that each take stays one group.
BATCH_OVERHEAD_TOKENS = 32
# The coalescer plans with less: it sends one group and plans the rest again with
# the texts that arrive meanwhile, so tighter groups now leave a better choice later.
PLANNING_OVERHEAD_TOKENS = 12
# What the coalescer plans with, as a share of a pass's overhead (learned or set).
PLANNING_SHARE = PLANNING_OVERHEAD_TOKENS / BATCH_OVERHEAD_TOKENS
# Queued tokens, per overhead token, that make waiting for company pointless:
# such a pass spends about a tenth of its time on the overhead.
FILL_TOKENS_PER_OVERHEAD = 8


class PassCostModel:
    """The planning overhead learned from the batches' own times, for when no figure is set.

    Each batch is a point (padded tokens, seconds from send to answer). A
    least-squares line through the recent points (older ones fade) gives
    `seconds = fixed + per_token * tokens`; a pass's overhead in tokens is
    fixed / per_token, and the planner takes PLANNING_SHARE of it. What is
    fixed per batch is not only the model's launch: the round trip to Triton,
    its scheduling and the front-end's own work per batch count too. With a
    GPU or a tiny model a token costs next to nothing against those, the
    overhead grows and a take stays one batch; on a CPU a token's compute
    dominates and padding is worth cutting. The figure stays within
    [`floor`, `ceiling`].
    """

    REFIT_EVERY = 16  # batches between fits
    MIN_WEIGHT = 32.0  # points (faded) before the first fit
    MIN_SPREAD = 0.05  # batches' sizes must differ by this share of their mean to show a slope

    def __init__(self, floor: int, ceiling: int, memory: int = 256) -> None:
        self.overhead_tokens = floor
        self._floor, self._ceiling = floor, max(floor, ceiling)
        self._keep = 1.0 - 1.0 / memory
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._seen = 0
        self._logged = floor  # the figure last logged

    def observe(self, tokens: int, seconds: float) -> None:
        keep = self._keep
        self._w = self._w * keep + 1.0
        self._x = self._x * keep + tokens
        self._y = self._y * keep + seconds
        self._xx = self._xx * keep + tokens * tokens
        self._xy = self._xy * keep + tokens * seconds
        self._seen += 1
        if self._seen % self.REFIT_EVERY == 0 and self._w >= self.MIN_WEIGHT:
            self._fit()

    def _fit(self) -> None:
        mean_x, mean_y = self._x / self._w, self._y / self._w
        spread = self._xx / self._w - mean_x * mean_x
        if spread <= (self.MIN_SPREAD * mean_x) ** 2:
            return  # batches all of one size: the line cannot be told
        per_token = (self._xy / self._w - mean_x * mean_y) / spread
        fixed = mean_y - per_token * mean_x
        # per_token <= 0: tokens are free next to the pass
        overhead = float(self._ceiling) if per_token <= 0 else fixed / per_token * PLANNING_SHARE
        learned = round(min(self._ceiling, max(self._floor, overhead)))
        if not self._logged / 1.5 <= learned <= self._logged * 1.5:
            self._logged = learned
            log.info(
                "batch planning: a pass costs %.2f ms + %.4f ms per padded token: overhead %d tokens",
                1000 * fixed,
                1000 * per_token,
                learned,
            )
        self.overhead_tokens = learned
