"""tl_neuronllm: find the good and bad MLP neurons of a TransformerLens model for a task."""

__version__ = "0.1.0"
