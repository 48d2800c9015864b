"""tl_neuronllm: find the good and bad MLP neurons of a TransformerLens model for a task.

    from tl_neuronllm import identify, Task
    result = identify(model, Task.from_records(records), k=100)
    with result.suppress(model, "bad"):
        logits = model(tokens)

The names here are what a user needs. The package is built in layers, each a subpackage that imports only
from the layers below it: ``data`` -> ``prompts`` -> ``model`` -> ``attribution`` -> ``scoring`` -> ``config`` ->
``result`` -> ``pipeline`` -> ``evaluation`` -> ``studies`` -> ``explain`` -> ``report`` -> ``cli`` (with
``errors``, ``provenance`` and ``validate`` underneath). Every error the package raises derives from
:class:`NeuronLLMError`.
"""

from tl_neuronllm.attribution.methods import AttributionMethod, register_method
from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.data.tasks import Item, Task
from tl_neuronllm.errors import (
    CacheNotFilled,
    ConfigError,
    ContextLengthError,
    InterventionError,
    MismatchError,
    MissingDependency,
    ModelError,
    NeuronLLMError,
    RandomMatchWarning,
    RegistryError,
    ResultFileError,
    ShortcutFallbackWarning,
    TaskError,
)
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.evaluation.evaluate import EvalConfig, evaluate, evaluate_many
from tl_neuronllm.explain.explainer import explain
from tl_neuronllm.explain.explanation import Explanation, NeuronExplanation
from tl_neuronllm.pipeline.identify import identify
from tl_neuronllm.pipeline.rescore import rescore
from tl_neuronllm.prompts.proxies import AugmentConfig, PromptConfig, TokenFormat
from tl_neuronllm.provenance import __version__
from tl_neuronllm.report.html import report_html
from tl_neuronllm.result.interventions import Intervention, intervene, make_hooks
from tl_neuronllm.result.neuron_result import Neuron, NeuronResult
from tl_neuronllm.scoring.ace import ScoringConfig
from tl_neuronllm.studies.compare import Comparison, compare, shared_vs_specific
from tl_neuronllm.studies.selection import CVSelection, select_cv
from tl_neuronllm.studies.stability import Stability, stability

__all__ = [
    "CacheNotFilled",
    "ConfigError",
    "ContextLengthError",
    "InterventionError",
    "MismatchError",
    "MissingDependency",
    "NeuronLLMError",
    "RegistryError",
    "ResultFileError",
    "RandomMatchWarning",
    "ShortcutFallbackWarning",
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
