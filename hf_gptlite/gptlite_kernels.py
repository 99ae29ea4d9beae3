"""GPTLite's fast paths, kept out of the model and attached through transformers' extension points.

Shipped next to ``modeling_gptlite.py``, which imports it relatively, so ``save_pretrained`` copies it and
``trust_remote_code`` loads it. Each path computes what the plain one computes (the same numbers in fp32) and steps
aside under ``torch.compile`` and ``torch.export``. docs/performance.md has the measurements behind each one.

    attention  sdpa, except a bf16/fp16 one-query decoding step on CPU, which runs as two matmuls: what "sdpa" means
               for GPTLite (the model file's own ``AttentionInterface``, transformers' way for a model to override
               an attention function locally), also registered for any model as ``attn_implementation="gptlite_sdpa"``
    cache      ``GrowingLayer``: a cache layer writing into a buffer with room to grow instead of ``torch.cat``;
               generate()'s default cache (and the model's own) get these layers (``default_cache``)
    mask       ``causal_mask``: ``create_causal_mask``, or None at once when attention is plainly causal
    loss       "ForCausalLMBlockwise" in transformers' ``LOSS_MAPPING``: ``ForCausalLMLoss``, a block of rows at a time
    head       ``OutputLayer``: the vocabulary head; a few-row fp32 decoding step on CPU in whichever weight layout
               this CPU runs faster (timed once per shape)

Switch: the environment variable ``GPTLITE_FAST_PATHS`` = ``all`` (the default), ``none``, or a comma list of the
names above; read at import, changed at run time with ``set_fast_paths``.
"""

import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.loss.loss_utils import LOSS_MAPPING
from transformers.masking_utils import AttentionMaskInterface, create_causal_mask, sdpa_mask
from transformers.modeling_utils import AttentionInterface

FAST_PATHS = ("attention", "cache", "mask", "loss", "head")
_enabled: set[str] = set()


def set_fast_paths(names: str = "all") -> set[str]:
    """Turn fast paths on: ``"all"``, ``"none"`` or a comma list of ``FAST_PATHS``; -> the set now on."""
    names = names.strip().lower()
    chosen = set(FAST_PATHS) if names in ("", "1", "all") else set() if names in ("0", "none") else \
        {n.strip() for n in names.split(",") if n.strip()}
    unknown = chosen - set(FAST_PATHS)
    if unknown:
        raise ValueError(f"GPTLITE_FAST_PATHS: unknown {sorted(unknown)}; use all, none or some of {FAST_PATHS}")
    _enabled.clear()
    _enabled.update(chosen)
    return set(_enabled)


def enabled(name: str) -> bool:
    return name in _enabled


def _tracing() -> bool:  # torch.compile / torch.export trace the plain paths (no Python-side decisions on data)
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


set_fast_paths(os.environ.get("GPTLITE_FAST_PATHS", "all"))


# ---- attention: "gptlite_sdpa" ------------------------------------------------------------------------
def one_query_attention(module, query, key, value, attention_mask, scaling, **kwargs):
    """softmax(q k^T * scaling + mask) v for one query per sequence, as two plain matmuls, softmax in fp32.
    q: (B, nh, 1, hd), k/v: (B, nh, S, hd) -> (B, 1, nh, hd). ``attention_mask``: boolean (True: may attend) or
    additive."""
    scores = (query * scaling) @ key.transpose(-1, -2)  # (B, nh, 1, S)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    return (weights @ value).transpose(1, 2), None


def gptlite_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa, except a bf16/fp16 decoding step on CPU (one query, e.g. over a StaticCache): CPU sdpa's
    half-precision flash kernel runs it 3-10x slower than two matmuls (batch 8, 12 heads, 544 positions: 8.8 vs
    1.5 ms per layer on an AVX-512-BF16 EPYC)."""
    if (enabled("attention") and query.shape[2] == 1 and query.device.type == "cpu" and not module.training
            and query.dtype in (torch.bfloat16, torch.float16) and not _tracing()):
        return one_query_attention(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register("gptlite_sdpa", gptlite_sdpa_attention)
AttentionMaskInterface.register("gptlite_sdpa", sdpa_mask)  # the same masks as "sdpa"


# ---- cache: GrowingLayer ----------------------------------------------------------------------------
class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values are views of a buffer with room for ``grow`` more positions, so a step
    writes only its new positions (``DynamicLayer`` appends with ``torch.cat``: every cached position copied again
    at every step). On CPU, without gradients, a half-precision model's keys/values are kept in fp32: for one query
    CPU sdpa's fp32 kernel is 9-12x faster than its bf16 one, and converting one new position per step is free (the
    cache takes twice the memory). The model casts its queries to the keys' dtype. Whatever replaces ``keys`` or
    ``values`` (beam reorder, batch select, repeat) leaves them off the buffer; the next update starts a new one.
    Under torch.compile / torch.export this is ``DynamicLayer.update``."""

    grow = 256

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.buffer = None  # (keys, values), each (B, nh, capacity, hd)

    def update(self, key_states, value_states, *args, **kwargs):
        if _tracing():
            return super().update(key_states, value_states, *args, **kwargs)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        dtype = key_states.dtype
        if key_states.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and not key_states.requires_grad:
            dtype = torch.float32
        past, (B, nh, T, hd) = self.get_seq_length(), key_states.shape
        end, buf = past + T, self.buffer
        if (buf is None or past == 0 or self.keys.data_ptr() != buf[0].data_ptr()
                or self.values.data_ptr() != buf[1].data_ptr() or buf[0].shape[:2] != (B, nh)
                or end > buf[0].shape[2] or buf[0].dtype != dtype):
            buf = tuple(key_states.new_empty(B, nh, end + self.grow, hd, dtype=dtype) for _ in range(2))
            if past:
                buf[0][:, :, :past], buf[1][:, :, :past] = self.keys, self.values
            self.buffer = buf
        buf[0][:, :, past:end], buf[1][:, :, past:end] = key_states, value_states
        self.keys, self.values = buf[0][:, :, :end], buf[1][:, :, :end]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` of ``GrowingLayer`` s, one per layer of the model."""

    def __init__(self, config):
        Cache.__init__(self, layers=[GrowingLayer() for _ in range(config.num_hidden_layers)])


def default_cache(config, cache: Cache | None = None) -> Cache:
    """The cache a GPTLite model fills when none was given (``cache=None``), or the one generate() prepared: its
    default ``DynamicCache`` becomes a ``GrowingCache``; any other cache (static, offloaded, quantized, the user's)
    is kept as it is."""
    growing = enabled("cache") and not _tracing()  # traced: transformers' DynamicCache (its pytree is registered)
    if cache is None:
        return GrowingCache(config) if growing else DynamicCache(config=config)
    plain = (type(cache) is DynamicCache and not cache.offloading and not getattr(cache, "_is_user_defined", False)
             and all(type(layer) is DynamicLayer and not layer.is_initialized for layer in cache.layers))
    return GrowingCache(config) if growing and plain else cache


# ---- mask: causal_mask ------------------------------------------------------------------------------
def causal_mask(config, inputs_embeds, attention_mask, cache, position_ids):
    """``create_causal_mask(...)`` (None: plainly causal, a 4D mask, or a flex BlockMask). With sdpa, nothing
    padded, no positions given, a growing cache (or none) and one new token or an empty cache, None at once:
    ``create_causal_mask``'s checks cost 0.1-0.2 ms a call on CPU, a tenth of a small model's decoding step."""
    if (enabled("mask") and "sdpa" in config._attn_implementation and position_ids is None
            and not getattr(cache, "is_compileable", False) and not _tracing()
            and (inputs_embeds.shape[1] == 1 or cache is None or cache.get_seq_length() == 0)
            and (attention_mask is None or (attention_mask.ndim == 2 and bool(attention_mask.all())))):
        return None
    return create_causal_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              cache=cache, position_ids=position_ids)


# ---- loss: "ForCausalLMBlockwise" -------------------------------------------------------------------
class _BlockwiseCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of logits (N, V) at labels (N,), rows labelled ``ignore_index`` skipped: the numbers of
    ``F.cross_entropy(logits.float(), labels, reduction="sum")`` without its two (N, V) fp32 tensors (the upcast
    copy and the stored log-softmax). Forward keeps one log-sum-exp per row; backward recomputes the softmax a block
    of rows at a time, in fp32, and writes the gradient in the logits' dtype."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index):
        # fp32 blocks of ~4 MB stay in a CPU's cache; on a GPU, few large blocks (each block is a few kernel launches)
        ctx.rows = max(1, (2**20 if logits.device.type == "cpu" else 2**26) // logits.shape[1])
        lse = torch.cat([torch.logsumexp(block.float(), dim=-1) for block in logits.split(ctx.rows)])  # (N,)
        keep = labels != ignore_index
        labels = labels.where(keep, 0)
        target = logits.gather(1, labels[:, None])[:, 0].float()  # (N,) the label's logit
        ctx.save_for_backward(logits, labels, lse, keep)
        return ((lse - target) * keep).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        logits, labels, lse, keep = ctx.saved_tensors
        grad_logits = torch.empty_like(logits, memory_format=torch.contiguous_format)
        scale = grad * keep  # (N,) 0 for ignored rows
        for i in range(0, logits.shape[0], ctx.rows):
            rows = slice(i, i + ctx.rows)
            p = torch.exp(logits[rows].float() - lse[rows, None])  # softmax of the block, fp32
            p.scatter_add_(1, labels[rows, None], p.new_full((p.shape[0], 1), -1.0))  # - one-hot(label)
            grad_logits[rows] = p.mul_(scale[rows, None])
        return grad_logits, None, None


def causal_lm_loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None, **kwargs):
    """transformers' ``ForCausalLMLoss`` (same arguments, same value: labels shifted inside, the mean over labelled
    tokens or the sum / ``num_items_in_batch``) computed by ``_BlockwiseCrossEntropy``."""
    if shift_labels is None:  # tokens < n predict n
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    shift_labels = shift_labels.reshape(-1).to(logits.device)
    total = _BlockwiseCrossEntropy.apply(logits.reshape(-1, vocab_size), shift_labels, ignore_index)
    if num_items_in_batch is None:
        return total / (shift_labels != ignore_index).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


LOSS_MAPPING["ForCausalLMBlockwise"] = causal_lm_loss


def loss_for(loss_type: str | None) -> str | None:
    """The ``LOSS_MAPPING`` key a GPTLite model computes its ``loss_type`` with: "ForCausalLM" is computed block-wise
    when the loss fast path is on (the model keeps ``loss_type="ForCausalLM"``, which the Trainer reads to count
    label items)."""
    return "ForCausalLMBlockwise" if loss_type == "ForCausalLM" and enabled("loss") else loss_type


# ---- head: OutputLayer ------------------------------------------------------------------------------
_faster_layout: dict[tuple, bool] = {}  # (rows, V, H, threads) -> whether W @ x^T beat x @ W^T here


def _transposed_is_faster(weight, x) -> bool:
    key = (x.shape[0], *weight.shape, torch.get_num_threads())
    if key not in _faster_layout:
        plain, transposed = lambda: F.linear(x, weight), lambda: weight @ x.T  # noqa: E731
        times = {plain: [], transposed: []}
        for _ in range(3):  # alternating, the first round a warm-up
            for f in times:
                start = time.perf_counter()
                f()
                times[f].append(time.perf_counter() - start)
        _faster_layout[key] = min(times[transposed][1:]) < 0.9 * min(times[plain][1:])
    return _faster_layout[key]


class OutputLayer(nn.Linear):
    """The vocabulary head, an ``nn.Linear``. For a decoding step of 2-32 sequences in fp32 on CPU, ``x @ W^T`` and
    ``W @ x^T`` (the same numbers, a transposed view) run at different speeds in MKL depending on the CPU kind and
    the row count (124M head, 50257 x 768: 1.3-5x faster transposed at 2-32 rows on an AMD EPYC; on an Intel Xeon
    1.9x slower at 2 rows, 1.6x faster at 8): the two are timed once per shape on first use and the faster kept."""

    @classmethod
    def adopt(cls, linear, training: bool):
        """A plain ``nn.Linear`` (resize_token_embeddings builds one for an untied head) made an OutputLayer, in
        ``training`` mode; anything else as it is. OutputLayer adds no state, so the module itself changes class (as
        ``torch.nn.utils.parametrize`` does): its parameters, hooks and transformers' init flag stay."""
        if type(linear) is nn.Linear:
            linear.__class__ = cls
            linear.train(training)
        return linear

    def forward(self, x):  # (B, T, H) -> (B, T, V)
        if (enabled("head") and x.ndim == 3 and x.shape[1] == 1 and 2 <= x.shape[0] <= 32 and self.bias is None
                and not self.training and x.device.type == "cpu" and self.weight.dtype == torch.float32
                and not _tracing() and _transposed_is_faster(self.weight, x[:, 0])):
            return (self.weight @ x[:, 0].T).T.unsqueeze(1)
        return super().forward(x)
