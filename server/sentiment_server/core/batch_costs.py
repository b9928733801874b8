"""What a forward pass costs, in padded tokens: the figures batch planning uses.

A pass of n texts padded to L tokens costs about `overhead + n * L` token-times:
the overhead is reading every weight once and launching every op. The coalescer
and the Python-backend model (which keeps its own copy of `plan_groups`) both
plan with these. Measurements behind them: bench/results.
"""

# A DistilBERT pass's overhead on CPU. On a GPU a pass is nearly free per token
# and costly per launch: use thousands there, so that each take stays one group.
BATCH_OVERHEAD_TOKENS = 32
# The coalescer plans with less: it sends one group and plans the rest again with
# the texts that arrive meanwhile, so tighter groups now leave a better choice later.
PLANNING_OVERHEAD_TOKENS = 12
# Queued tokens, per overhead token, that make waiting for company pointless:
# such a pass spends about a tenth of its time on the overhead.
FILL_TOKENS_PER_OVERHEAD = 8
