"""Attribution layer: the integrated-gradients kernels and the registered attribution methods.

Importing the layer registers the built-in methods (``ig``, ``grad_x_act``, ``activation`` and the baselines).
"""

from tl_neuronllm.attribution import baselines, methods

__all__ = ["baselines", "methods"]
