"""safemeta: safe meta-reinforcement learning with anytime-safe adaptation.

Implements Xu & Zhu, "Efficient Safe Meta-Reinforcement Learning: Provable
Near-Optimality and Anytime Safety" (NeurIPS 2025). See SPEC-derived docs in README.
"""

from safemeta.envs.registry import suite, suite_ids

__version__ = "0.1.0"
__all__ = ["suite", "suite_ids", "__version__"]
