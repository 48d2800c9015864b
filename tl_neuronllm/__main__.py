"""``python -m tl_neuronllm``: the ``tl-neuronllm`` command."""

from .cli import main

raise SystemExit(main())
