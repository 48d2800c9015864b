"""tl_neuronllm: find the good and bad MLP neurons of a TransformerLens model for a task.

    from tl_neuronllm import identify, Task
    result = identify(model, Task.from_records(records), k=100)
    with result.suppress(model, "bad"):
        logits = model(tokens)

The names here are what a user needs. Internals live in their modules (``tl_neuronllm.adapter``,
``tl_neuronllm.scoring``, ...); the few that used to be exported here still are, with a
``DeprecationWarning`` naming their module.
"""

__version__ = "0.5.0"

import importlib
import warnings
from typing import Any

from .adapter import ModelError
from .compare import Comparison, compare, shared_vs_specific
from .config import IdentifyConfig
from .evaluate import EvalConfig, EvalResult, evaluate, evaluate_many
from .explain import Explanation, NeuronExplanation, explain
from .html_report import report_html
from .interventions import Intervention, intervene, make_hooks
from .methods import AttributionMethod, register_method
from .pipeline import identify
from .proxies import AugmentConfig, PromptConfig, TokenFormat
from .rescoring import rescore
from .result import Neuron, NeuronResult
from .scoring import ScoringConfig
from .selection import CVSelection, select_cv
from .stability import Stability, stability
from .tasks import Item, Task, TaskError

#: Internals once exported here: name -> the module that has them.
_MOVED = {
    "ACEState": "tl_neuronllm.scoring",
    "ModelAdapter": "tl_neuronllm.adapter",
    "preserved_model_state": "tl_neuronllm.adapter",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"tl_neuronllm.{name} is an internal; import it from {_MOVED[name]}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'tl_neuronllm' has no attribute {name!r}")


__all__ = [
    "AttributionMethod",
    "AugmentConfig",
    "CVSelection",
    "Comparison",
    "EvalConfig",
    "EvalResult",
    "Explanation",
    "IdentifyConfig",
    "Intervention",
    "Item",
    "ModelError",
    "Neuron",
    "NeuronExplanation",
    "NeuronResult",
    "PromptConfig",
    "ScoringConfig",
    "Stability",
    "Task",
    "TaskError",
    "TokenFormat",
    "__version__",
    "compare",
    "evaluate",
    "evaluate_many",
    "explain",
    "identify",
    "intervene",
    "make_hooks",
    "register_method",
    "report_html",
    "rescore",
    "select_cv",
    "shared_vs_specific",
    "stability",
]
