"""Tasks: multiple-choice items, loaders (records, JSONL, CSV, classification rows), validation and splits.

An :class:`Item` is one multiple-choice question: a stem, 2 to 26 options, the index of the
correct one and an optional context (passage). Items are either *text* items (strings, rendered
with the model's tokenizer) or *token* items (lists of token ids, for models without a tokenizer
such as ``TransformerBridge.boot_native`` models). A :class:`Task` is a named, validated list of
items of one kind. Every validation error names the item and the field.

Modules: :mod:`~tl_neuronllm.data.tasks.items` (:class:`Item`, :class:`TaskError`, :func:`item_from_record`),
:mod:`~tl_neuronllm.data.tasks.files` (UTF-8, JSONL and CSV reading), :mod:`~tl_neuronllm.data.tasks.classification`
(classification rows as items) and :mod:`~tl_neuronllm.data.tasks.task` (:class:`Task`).
"""

from __future__ import annotations

from tl_neuronllm.data.tasks.files import jsonl_objects, read_text
from tl_neuronllm.data.tasks.items import LETTERS, MAX_OPTIONS, Item, TaskError, Text, TokenSeq, item_from_record
from tl_neuronllm.data.tasks.task import Task

__all__ = [
    "LETTERS",
    "MAX_OPTIONS",
    "Item",
    "Task",
    "TaskError",
    "Text",
    "TokenSeq",
    "item_from_record",
    "jsonl_objects",
    "read_text",
]
