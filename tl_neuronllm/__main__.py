"""``python -m tl_neuronllm``: the ``tl-neuronllm`` command."""

from tl_neuronllm.cli.app import main

raise SystemExit(main())
