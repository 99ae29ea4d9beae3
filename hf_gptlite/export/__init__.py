"""Run a GPTLite outside PyTorch, or smaller inside it: each format checked by the runtime that loads it
(docs/export.md).

- ``gguf``: one GGUF file for llama.cpp (architecture "gpt2", the tokenizer embedded): ``export_gguf``.
- ``onnx``: ONNX / OpenVINO prefill + decode graphs through transformers' exporters: ``export_for_runtime``,
  ``save_for_runtime``, ``load_exported``, ``greedy_generate``.
- ``int8``: int8 weight-only quantization on CPU through ``TorchAoConfig``: ``load_int8``, ``save_int8``.
- ``command``: ``python -m hf_gptlite export --format onnx|openvino|int8`` (``export_gguf`` lives in ``gguf``).

Each optional runtime (gguf, onnxruntime, openvino, torchao, llama_cpp) is imported only when its function runs:
``pip install 'hf_gptlite[export]'``.
"""
