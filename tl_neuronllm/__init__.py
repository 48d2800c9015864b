"""tl_neuronllm: find the good and bad MLP neurons of a TransformerLens model for a task.

from tl_neuronllm import identify, Task
result = identify(model, Task.from_records(records), k=100)
with result.suppress(model, "bad"):
    logits = model(tokens)
"""

__version__ = "0.2.0"

from .adapter import ModelAdapter, ModelError, preserved_model_state
from .compare import Comparison, compare, shared_vs_specific
from .evaluate import EvalConfig, EvalResult, evaluate
from .explain import Explanation, NeuronExplanation, explain
from .html_report import report_html
from .interventions import Intervention, intervene, make_hooks
from .pipeline import IdentifyConfig, identify, rescore
from .proxies import AugmentConfig, PromptConfig, TokenFormat
from .result import Neuron, NeuronResult
from .scoring import ACEState, ScoringConfig
from .selection import CVSelection, select_cv
from .stability import Stability, stability
from .tasks import Item, Task, TaskError

__all__ = [
    "__version__",
    "ACEState",
    "AugmentConfig",
    "CVSelection",
    "Comparison",
    "EvalConfig",
    "EvalResult",
    "Explanation",
    "IdentifyConfig",
    "Intervention",
    "Item",
    "ModelAdapter",
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
    "compare",
    "evaluate",
    "explain",
    "identify",
    "intervene",
    "make_hooks",
    "preserved_model_state",
    "report_html",
    "rescore",
    "select_cv",
    "shared_vs_specific",
    "stability",
]
