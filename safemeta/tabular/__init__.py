"""Exact tabular CMDPs: evaluation, safe adaptation, theory, meta-training (SPEC §2.3, §4.3)."""

from safemeta.tabular.adapt import safe_adapt, solve_dual
from safemeta.tabular.cmdp import CMDP, Evaluation, evaluate, softmax
from safemeta.tabular.theory import TheoryParams, theory_params

__all__ = ["CMDP", "Evaluation", "TheoryParams", "evaluate", "safe_adapt", "softmax",
           "solve_dual", "theory_params"]
