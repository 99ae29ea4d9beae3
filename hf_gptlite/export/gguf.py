"""A GPTLite causal LM -> one GGUF file that llama.cpp (and ollama, LM Studio ...) runs as a GPT-2, tokenizer inside.

    model dir -> checks (causal LM, byte-level BPE tokenizer llama.cpp can reproduce) -> gguf.GGUFWriter:
    architecture "gpt2", llama.cpp's GPT-2 tensor names, tokenizer.ggml.* (tokens, types, merges, special ids,
    pre-tokenizer "gpt-2") -> F.gguf (written to F.gguf.tmp, renamed when complete)

Layouts: GGUF lists a tensor's dimensions fastest first, so a numpy array (rows, cols) is ggml's {cols, rows}; our
``nn.Linear`` weights (out, in) are exactly what llama.cpp's GPT-2 loader expects (``attn_qkv`` {H, 3H}, ``ffn_up``
{H, n_ff}, ``ffn_down`` {n_ff, H}); GPT-2's own Conv1D weights would need a transpose, ours do not.

What llama.cpp's GPT-2 graph (src/models/gpt2.cpp) reads and how each config is written:
- ``intermediate_size`` -> ``gpt2.feed_forward_length`` (any width, not only 4x);
- an untied head -> ``output.weight`` (absent: llama.cpp reuses ``token_embd.weight``);
- ``pad_vocab_size_multiple`` -> the padding rows are dropped (their logits are never used);
- ``qkv_bias=False`` -> a zero Q/K/V bias (the graph requires one; zeros are the same function);
- a tokenizer with fewer tokens than ``vocab_size`` -> ``[PAD<i>]`` tokens of type UNUSED fill the rest.
Refused with one ``error:`` line: a model that is not a causal LM, a tokenizer that is not byte-level BPE with
GPT-2's split (a normalizer, a prefix space, byte fallback, dropout ...), more tokens than embedding rows.

The split: our tokenizers' ``ByteLevel(use_regex=True)`` pre-tokenizer is GPT-2's regex
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`` (checked against the regex itself
in tests/export/test_gguf.py), which llama.cpp calls ``tokenizer.ggml.pre = "gpt-2"`` (``"gpt2"`` is refused by it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputValueError, MissingInputError, NotAFileError, OutputInTheWayError

GGUF_DTYPES = ("f32", "f16", "q8_0")
GPT2_PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's regex split (llama-vocab.cpp)


class GGUFExportError(InputValueError):
    """A model or tokenizer llama.cpp's GPT-2 graph cannot run as it is."""


def _gguf():
    try:
        import gguf
    except ImportError as err:  # an optional dependency: pip install "hf_gptlite[export]"
        raise MissingInputError(
            "the `gguf` package is not installed: pip install 'hf_gptlite[export]' (or pip install gguf)"
        ) from err
    return gguf


# ---- the tokenizer -------------------------------------------------------------------------------------------
def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GGUFExportError(
            f"{type(tokenizer).__name__} is not a fast (`tokenizers`) tokenizer: save the model with "
            "the PreTrainedTokenizerFast it was trained with"
        )
    return json.loads(backend.to_str())


def _check_byte_level_bpe(spec: dict) -> None:
    """Refuse a tokenizer whose ids llama.cpp's "gpt2" BPE with the "gpt-2" split would not reproduce."""
    model = spec["model"]
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"its model is {model.get('type')}, not BPE")
    for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            problems.append(f"BPE {key}={model[key]!r}")
    for key in ("byte_fallback", "ignore_merges"):
        if model.get(key):
            problems.append(f"BPE {key}=True")
    if spec.get("normalizer") is not None:
        problems.append(f"it has a normalizer ({spec['normalizer'].get('type')})")
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 1:
        pre = pre["pretokenizers"][0]
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        problems.append(f"its pre-tokenizer is {pre.get('type') or None}, not ByteLevel with GPT-2's regex")
    elif pre.get("add_prefix_space"):
        problems.append("its ByteLevel pre-tokenizer adds a prefix space (llama.cpp's does not)")
    if problems:
        raise GGUFExportError(
            "the tokenizer is not a byte-level BPE that llama.cpp's GPT-2 tokenizer reproduces: "
            + "; ".join(problems)
        )


def _added_bos_eos(spec: dict, bos: str | None, eos: str | None) -> tuple[bool, bool]:
    """(add_bos, add_eos) of the post-processor: a TemplateProcessing ``[BOS] $A [EOS]`` (either end optional)."""
    post = spec.get("post_processor")
    if post is None or post.get("type") == "ByteLevel":
        return False, False
    if post.get("type") != "TemplateProcessing":
        raise GGUFExportError(f"the tokenizer's post-processor {post.get('type')} has no GGUF equivalent")
    single = [
        next(iter(piece.values()))["id"] if "SpecialToken" in piece else "$A" for piece in post["single"]
    ]
    head, tail = single[: single.index("$A")], single[single.index("$A") + 1 :]
    if head not in ([], [bos]) or tail not in ([], [eos]):
        raise GGUFExportError(
            f"the tokenizer wraps a text as {single}: GGUF can only add [bos] before and [eos] after"
        )
    return bool(head), bool(tail)


def tokenizer_metadata(tokenizer, n_vocab: int) -> dict:
    """The ``tokenizer.ggml.*`` values of ``tokenizer`` for a model with ``n_vocab`` embedding rows: tokens (ids
    0..n_vocab-1, ``[PAD<i>]`` where the tokenizer has no token), token types, merges, special ids, add_bos/eos."""
    gguf = _gguf()
    spec = _tokenizer_json(tokenizer)
    _check_byte_level_bpe(spec)
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= n_vocab:
        raise GGUFExportError(
            f"the tokenizer has ids up to {max(by_id)} but the model has {n_vocab} embedding rows: "
            "use the tokenizer the weights were trained with"
        )
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    add_bos, add_eos = _added_bos_eos(spec, tokenizer.bos_token, tokenizer.eos_token)
    return dict(
        tokens=tokens,
        types=[int(t) for t in types],
        merges=merges,
        bos=tokenizer.bos_token_id,
        eos=tokenizer.eos_token_id,
        pad=tokenizer.pad_token_id,
        add_bos=add_bos,
        add_eos=add_eos,
    )


# ---- the tensors ---------------------------------------------------------------------------------------------
def gguf_tensors(model) -> dict[str, torch.Tensor]:
    """llama.cpp's GPT-2 tensors (name -> fp32 tensor in our (out, in) layout) of a ``GPTLiteForCausalLM``."""
    c = model.config
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    V = c.vocab_size
    out = {
        "token_embd.weight": sd["transformer.wte.weight"][:V],
        "position_embd.weight": sd["transformer.wpe.weight"],
        "output_norm.weight": sd["transformer.ln_f.weight"],
        "output_norm.bias": sd["transformer.ln_f.bias"],
    }
    if not c.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"][:V]
    for i in range(c.num_hidden_layers):
        p = f"transformer.h.{i}."
        out |= {
            f"blk.{i}.attn_norm.weight": sd[p + "ln_1.weight"],
            f"blk.{i}.attn_norm.bias": sd[p + "ln_1.bias"],
            f"blk.{i}.attn_qkv.weight": sd[p + "attn.c_attn.weight"],
            f"blk.{i}.attn_qkv.bias": sd.get(p + "attn.c_attn.bias", torch.zeros(3 * c.hidden_size)),
            f"blk.{i}.attn_output.weight": sd[p + "attn.c_proj.weight"],
            f"blk.{i}.attn_output.bias": sd[p + "attn.c_proj.bias"],
            f"blk.{i}.ffn_norm.weight": sd[p + "ln_2.weight"],
            f"blk.{i}.ffn_norm.bias": sd[p + "ln_2.bias"],
            f"blk.{i}.ffn_up.weight": sd[p + "mlp.c_fc.weight"],
            f"blk.{i}.ffn_up.bias": sd[p + "mlp.c_fc.bias"],
            f"blk.{i}.ffn_down.weight": sd[p + "mlp.c_proj.weight"],
            f"blk.{i}.ffn_down.bias": sd[p + "mlp.c_proj.bias"],
        }
    return out


def _tensor_type(name: str, array: np.ndarray, dtype: str):
    """The GGML type of one tensor, as llama.cpp's converter chooses it: 1-D tensors and the position embedding
    stay f32; q8_0 needs rows whose length is a multiple of 32 (others fall back to f16)."""
    gguf = _gguf()
    T = gguf.GGMLQuantizationType
    if dtype == "f32" or array.ndim < 2 or name == "position_embd.weight":
        return T.F32
    if dtype == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[T.Q8_0][0] == 0:
        return T.Q8_0
    return T.F16


def _check_model(model) -> None:
    from ..modeling_gptlite import GPTLiteForCausalLM

    if not isinstance(model, GPTLiteForCausalLM):
        raise GGUFExportError(
            f"GGUF export takes a GPTLiteForCausalLM, got {type(model).__name__} (a classifier "
            "or another model has no llama.cpp GPT-2 equivalent)"
        )


def _check_outfile(outfile: Path, overwrite: bool) -> None:
    if outfile.is_dir():
        raise NotAFileError(f"outfile {str(outfile)!r} is a folder; pass a file name ending in .gguf")
    if outfile.exists() and not overwrite:
        raise OutputInTheWayError(f"outfile {str(outfile)!r} exists; remove it or pass --overwrite true")


def export_gguf(
    model, tokenizer, outfile: str | os.PathLike, dtype: str = "f32", overwrite: bool = False
) -> Path:
    """Write ``model`` (a ``GPTLiteForCausalLM``) and its ``tokenizer`` to the GGUF file ``outfile``; ``dtype``
    f32, f16 or q8_0 (the 2-D weights; norms, biases and the position embedding stay f32). Returns the path."""
    gguf = _gguf()
    outfile = Path(outfile)
    if dtype not in GGUF_DTYPES:
        raise InputValueError(f"dtype {dtype!r} is not one of {GGUF_DTYPES}")
    _check_outfile(outfile, overwrite)
    _check_model(model)
    c = model.config
    meta = tokenizer_metadata(tokenizer, c.vocab_size)  # checks the tokenizer before anything is written
    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = outfile.with_name(outfile.name + ".tmp")
    writer = gguf.GGUFWriter(tmp, arch="gpt2")
    writer.add_name(Path(getattr(c, "_name_or_path", "") or "gptlite").name or "gptlite")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_head_count(c.num_attention_heads)
    writer.add_layer_norm_eps(c.layer_norm_eps)
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[dtype]
    )
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GPT2_PRE_TOKENIZER)
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["types"])
    writer.add_token_merges(meta["merges"])
    for name, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if meta[name] is not None:
            add(meta[name])
    writer.add_add_bos_token(meta["add_bos"])
    writer.add_add_eos_token(meta["add_eos"])
    for name, tensor in gguf_tensors(model).items():
        array = tensor.contiguous().numpy()
        qtype = _tensor_type(name, array, dtype)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, outfile)
    return outfile


# ---- the command ----------------------------------------------------------------------------------------------
@dataclass
class GGUFExportConfig:
    model_dir: str = field(metadata={"help": "A GPTLite save_pretrained folder (weights + tokenizer)."})
    outfile: str = field(metadata={"help": "The GGUF file to write (e.g. model.gguf)."})
    dtype: str = field(
        default="f32", metadata={"help": "Weight type of the 2-D tensors.", "choices": list(GGUF_DTYPES)}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace outfile if it exists."})


def run_export_gguf(config: GGUFExportConfig) -> Path:
    """``python -m hf_gptlite export_gguf``: check, load, write, print what was written."""
    from ..loading import check_model_dir

    _check_outfile(Path(config.outfile), config.overwrite)
    model, tokenizer = load_for_export(
        check_model_dir(config.model_dir, hint="pass a save_pretrained folder")
    )
    start = time.perf_counter()
    path = export_gguf(model, tokenizer, config.outfile, config.dtype, overwrite=config.overwrite)
    size = path.stat().st_size / 2**20
    print(
        f"wrote {path} ({config.dtype}, {size:.1f} MiB, {time.perf_counter() - start:.1f} s): "
        f"llama-cli -m {path} -p 'text', or llama_cpp.Llama(model_path='{path}')"
    )
    return path


def load_for_export(model_dir: str | os.PathLike):
    """(fp32 GPTLiteForCausalLM in eval mode, tokenizer) of a checked model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_gptlite  # noqa: F401  (registers the Auto classes)

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    _check_model(model)
    return model, AutoTokenizer.from_pretrained(str(model_dir))


__all__ = [
    "GGUFExportConfig",
    "GGUFExportError",
    "GGUF_DTYPES",
    "export_gguf",
    "gguf_tensors",
    "load_for_export",
    "run_export_gguf",
    "tokenizer_metadata",
]
