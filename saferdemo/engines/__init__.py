"""Engines: one streaming interface (`base.Engine`) over several backends.

- `transformers_engine`: the model in this process (`generate` in a thread); also batched generation.
- `vllm_engine`: vLLM's AsyncLLM on a GPU host (optional extra).
- `openai_engine`: any OpenAI-compatible server (`vllm serve`, `transformers serve`, an API).

Every backend feeds a `base.StreamingGeneration`, so stopping, timeouts, errors and finish reasons behave
the same whichever one runs. Import the backend modules directly; importing this package loads none of them.
"""
