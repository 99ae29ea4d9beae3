"""Run a GPTLite outside PyTorch, or smaller inside it: each format checked by the runtime that loads it.

- ``gguf``: one GGUF file for llama.cpp (architecture "gpt2", the tokenizer embedded); ``export_gguf``.
- ``onnx``: ONNX / OpenVINO through transformers' exporters (prefill + decode graphs); ``export_onnx``.
- ``int8``: int8 weight-only quantization on CPU through ``TorchAoConfig``; ``quantize_int8``.

Each optional runtime (gguf, onnxruntime, openvino, torchao) is imported only when its function runs:
``pip install 'hf_gptlite[export]'``.
"""
