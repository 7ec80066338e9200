"""Exact tabular CMDPs: evaluation, safe adaptation, theory, meta-training (SPEC §2.3, §4.3)."""

from safemeta.core.theory import TheoryParams, theory_params
from safemeta.tabular.adapt import safe_adapt, solve_tabular_dual
from safemeta.tabular.cmdp import CMDP, Evaluation, evaluate, softmax

__all__ = ["CMDP", "Evaluation", "TheoryParams", "evaluate", "safe_adapt", "softmax",
           "solve_tabular_dual", "theory_params"]
