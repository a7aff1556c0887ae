"""Serving with vLLM: what the operator needs to know about `vllm serve` without vLLM installed.

`vllm_args` checks a `vllm serve` argument list against a description of vLLM's own argument parser,
generated from the pinned wheel (`python -m soundmind.serve.vllm_args --write`) and committed beside it.
"""
