"""The letter-format adapter of SmolLM2-135M-Instruct (a LoRA that ``scripts/train_organism.py`` trains).

``letter_adapter.safetensors`` holds, per adapted module of the Hugging Face ``LlamaForCausalLM``,
``<module>.lora_A`` ``[r, in]`` and ``<module>.lora_B`` ``[out, r]`` (float16) and the metadata
``format=tl_neuronllm-lora-v1`` and ``scale``; merging it is ``W += scale * B @ A``. Its training config and log are
in the repository's ``organism/`` folder; what it can do is in ``docs/organism.md``.
"""
