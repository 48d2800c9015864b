"""Scoring layer: ACE (the einsum scoring kernel) and the registered reducers. Never imports model code.

Importing the layer registers the built-in reducers (``ace`` and the baselines').
"""

from tl_neuronllm.scoring import baseline_reducers, reducers

__all__ = ["baseline_reducers", "reducers"]
