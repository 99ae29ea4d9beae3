"""GPTLite: a GPT-2-style decoder, written to be read.

    token ids -> token + position embeddings -> N x Block(pre-LN attention, pre-LN MLP) -> final LN -> head

Parameter names follow GPT-2 (``wte``, ``h.0.attn.c_attn`` ...): converting GPT-2 weights is a transpose (our
projections are ``nn.Linear``, GPT-2's ``Conv1D``). This file is the model alone: the measured fast paths live in
``gptlite_kernels.py``, attached through transformers' extension points. Both ship with the weights (with
``configuration_gptlite.py``) and run under ``trust_remote_code`` where the ``hf_gptlite`` package is not installed.
Shapes: B = batch, T = new tokens, S = tokens attended to (cache + new), H = hidden size, nh = heads, hd = head size.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.loss.loss_utils import LOSS_MAPPING
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import AttentionInterface, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_gptlite import GPTLiteConfig
from .gptlite_kernels import OutputLayer, causal_mask, default_cache, gptlite_sdpa_attention, loss_for

# transformers' attention functions by name, with "sdpa" overridden for this model (a CPU decoding fast path)
ALL_ATTENTION_FUNCTIONS = AttentionInterface()
ALL_ATTENTION_FUNCTIONS["sdpa"] = gptlite_sdpa_attention


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(q k^T * scaling + mask) v. q: (B, nh, T, hd), k/v: (B, nh, S, hd) -> (B, T, nh, hd)."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:  # additive mask: 0 where allowed, a large negative number elsewhere
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value)  # (B, nh, T, hd)
    return out.transpose(1, 2), weights


class GPTLiteAttention(nn.Module):
    """Causal multi-head self-attention with one fused Q/K/V projection."""

    def __init__(self, config: GPTLiteConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the sdpa / flash kernels
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.resid_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, attention_mask=None, cache: Cache | None = None, **kwargs):
        """-> (output (B, T, H), attention weights (B, nh, T, S), or None from kernels that do not return them)"""
        B, T, H = hidden_states.shape
        qkv = self.c_attn(hidden_states).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hd)
        if cache is not None:  # append this step's keys/values; attend to all of them
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hd)
        # eager_attention_forward above, or a kernel by name: "sdpa", "flash_attention_2", "flex_attention" ...
        attention_fn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attention_fn(  # out: (B, T, nh, hd); q.to(): a cache may keep keys wider (gptlite_kernels)
            self, q.to(k.dtype), k, v, attention_mask, dropout=self.attn_dropout if self.training else 0.0,
            scaling=self.scaling, **kwargs,
        )
        out = self.c_proj(out.reshape(B, T, H).to(hidden_states.dtype))
        return (self.resid_dropout(out) if self.training else out), weights


class GPTLiteMLP(nn.Module):
    """H -> 4H -> GELU(tanh) -> H."""

    def __init__(self, config: GPTLiteConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x):
        x = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return self.dropout(x) if self.training else x  # dropout modules are a call each, even when off


class GPTLiteBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTLiteConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = GPTLiteAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GPTLiteMLP(config)

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        # `cache` by keyword: under gradient checkpointing (with gradients on) the base class drops it, with a warning
        hidden_states = hidden_states + self.attn(self.ln_1(hidden_states), attention_mask, cache, **kwargs)[0]
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class GPTLitePreTrainedModel(PreTrainedModel):
    config_class = GPTLiteConfig
    config: GPTLiteConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPTLiteBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # what `output_hidden_states` / `output_attentions` collect (hooks installed by `capture_outputs`): each block's
    # input and output (the last one replaced by the final LayerNorm's output), and the attention weights
    _can_record_outputs = {"hidden_states": GPTLiteBlock, "attentions": GPTLiteAttention}

    def _init_weights(self, module):
        super()._init_weights(module)  # N(0, 0.02) linears/embeddings, unit LayerNorms, zero biases
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layers) so the residual stream's variance
        # does not grow with depth.
        if isinstance(module, (GPTLiteAttention, GPTLiteMLP)):
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.c_proj.weight, mean=0.0, std=std)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """transformers' resize. With ``config.pad_vocab_size_multiple`` set, ``config.vocab_size`` becomes
        ``new_num_tokens`` (the real tokens) and the embedding / head get ``config.padded_vocab_size`` rows: the
        shapes a model built from the saved config has, so resize -> save_pretrained -> from_pretrained round-trips."""
        multiple = self.config.pad_vocab_size_multiple
        if multiple is None or (new_num_tokens is None and pad_to_multiple_of is None):
            return super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if pad_to_multiple_of is not None or new_num_tokens is None:
            raise ValueError(f"config.pad_vocab_size_multiple={multiple} already pads the vocabulary: pass "
                             "new_num_tokens only, or change config.pad_vocab_size_multiple")
        self.config.vocab_size = new_num_tokens
        embeddings = super().resize_token_embeddings(self.config.padded_vocab_size, mean_resizing=mean_resizing)
        self.config.vocab_size = self.vocab_size = new_num_tokens  # super() set both to the number of rows
        return embeddings


class GPTLiteModel(GPTLitePreTrainedModel):
    """The backbone: embeddings, blocks and the final LayerNorm; returns hidden states (B, T, H)."""

    def __init__(self, config: GPTLiteConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.padded_vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.h = nn.ModuleList(GPTLiteBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, value):
        self.wte = value

    # output_hidden_states / output_attentions / return_dict / use_cache default to the config's values, the way
    # every transformers model reads them; `past_key_values=` still works, with transformers' deprecation warning
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)  # (B, T, H)
        T = inputs_embeds.shape[1]
        if use_cache and cache is None:
            cache = default_cache(self.config)  # a DynamicCache (of growing layers: gptlite_kernels)
        past = cache.get_seq_length() if cache is not None else 0
        # A static cache counts in a 0-d tensor: comparing it would sync and break a compiled graph; not checked then
        cached = past if isinstance(past, int) else 0
        if cached + T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {cached + T} (cached {cached} + new {T}) exceeds the model's "
                f"max_position_embeddings={self.config.max_position_embeddings}; truncate the input"
            )
        # None (pure causal: kernels use is_causal), a 4D additive mask, or a flex BlockMask; position_ids given by
        # the caller may restart (packed sequences), which the mask then follows
        mask = causal_mask(self.config, inputs_embeds, attention_mask, cache, position_ids)
        if position_ids is None:
            if attention_mask is not None and attention_mask.ndim == 2:
                # count real tokens only, so a left-padded prompt starts at position 0
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = (torch.arange(T, device=inputs_embeds.device) + past).unsqueeze(0)
        # .to(): with a device_map the position embedding may sit on another device than the token embedding
        hidden_states = inputs_embeds + self.wpe(position_ids).to(inputs_embeds.device)
        if self.training:
            hidden_states = self.drop(hidden_states)
        for block in self.h:
            hidden_states = block(hidden_states, mask, cache=cache, position_ids=position_ids, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.ln_f(hidden_states), cache=cache if use_cache else None)


class GPTLiteForCausalLM(GPTLitePreTrainedModel, GenerationMixin):
    """Backbone + a linear head over the vocabulary (tied to the token embedding by default)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPTLiteConfig):
        super().__init__(config)
        self.transformer = GPTLiteModel(config)
        self.lm_head = OutputLayer(config.hidden_size, config.padded_vocab_size, bias=False)  # an nn.Linear
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    @property
    def loss_function(self):  # transformers' rule; "ForCausalLM" computed block-wise (gptlite_kernels.loss_for)
        if hasattr(self, "_loss_function"):
            return self._loss_function
        return LOSS_MAPPING.get(loss_for(self.loss_type)) or super().loss_function

    @loss_function.setter
    def loss_function(self, value):
        self._loss_function = value

    def set_output_embeddings(self, value):  # resize_token_embeddings passes a plain nn.Linear: kept an OutputLayer
        self.lm_head = OutputLayer.adopt(value, self.training)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        # transformers picks the cache; its default DynamicCache gets GPTLite's growing layers (gptlite_kernels)
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        if model_kwargs.get("cache") is not None:
            model_kwargs["cache"] = default_cache(self.config, model_kwargs["cache"])

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        """``labels``: (B, T) token ids, shifted inside; -100 is ignored. ``logits_to_keep``: an int keeps the last
        positions (1: what generation needs, 0: all), a tensor selects positions as in every transformers model."""
        out = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, return_dict=True, **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(out.last_hidden_state, logits_to_keep))  # (B, T', padded vocab)
        if logits.shape[-1] != self.config.vocab_size:  # pad_vocab_size_multiple: drop the padding rows' logits
            logits = logits[..., : self.config.vocab_size]  # a view; the loss reads it without a copy
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states, attentions=out.attentions
        )

    @classmethod
    def from_gpt2(cls, src, **kwargs) -> "GPTLiteForCausalLM":
        """Build from GPT-2 weights: a ``GPT2LMHeadModel``, a local folder or a Hub id
        (``openai-community/gpt2``, ``-medium``, ``-large``, ``-xl``)."""
        from transformers import GPT2LMHeadModel

        gpt2 = src if isinstance(src, GPT2LMHeadModel) else GPT2LMHeadModel.from_pretrained(src, **kwargs)
        g = gpt2.config
        if g.scale_attn_by_inverse_layer_idx or g.reorder_and_upcast_attn or not g.scale_attn_weights:
            raise ValueError("GPT-2 variants with non-standard attention scaling are not supported")
        if g.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 activation {g.activation_function!r} is not GELU(tanh)")
        config = GPTLiteConfig(
            vocab_size=g.vocab_size, max_position_embeddings=g.n_positions, hidden_size=g.n_embd,
            num_hidden_layers=g.n_layer, num_attention_heads=g.n_head,
            intermediate_size=g.n_inner or 4 * g.n_embd, hidden_dropout_prob=g.resid_pdrop,
            attention_probs_dropout_prob=g.attn_pdrop, layer_norm_eps=g.layer_norm_epsilon,
            qkv_bias=True, tie_word_embeddings=g.tie_word_embeddings,
            # random test configs keep GPT-2's default ids (50256) with a small vocabulary: drop those
            **{name: (i if isinstance(i, int) and 0 <= i < g.vocab_size else None)
               for name, i in (("bos_token_id", g.bos_token_id), ("eos_token_id", g.eos_token_id),
                               ("pad_token_id", g.pad_token_id))},
        )
        model = cls(config).to(gpt2.dtype)
        state = {k: (v.t() if _is_conv1d_weight(k, v) else v) for k, v in gpt2.state_dict().items()}
        state = {k: v for k, v in state.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"GPT-2 conversion mismatch: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        return model.train(gpt2.training)

    def to_gpt2(self):
        """Return an equivalent ``transformers.GPT2LMHeadModel`` (weights copied)."""
        from transformers import GPT2Config, GPT2LMHeadModel

        c = self.config
        g = GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.max_position_embeddings, n_embd=c.hidden_size,
            n_layer=c.num_hidden_layers, n_head=c.num_attention_heads, n_inner=c.intermediate_size,
            activation_function="gelu_new", resid_pdrop=c.hidden_dropout_prob, embd_pdrop=c.hidden_dropout_prob,
            attn_pdrop=c.attention_probs_dropout_prob, layer_norm_epsilon=c.layer_norm_eps,
            tie_word_embeddings=c.tie_word_embeddings, bos_token_id=c.bos_token_id,
            eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
        )
        gpt2 = GPT2LMHeadModel(g).to(self.dtype)
        state = {k: (v.t().contiguous() if _is_conv1d_weight(k, v) else v) for k, v in self.state_dict().items()}
        for k in ("transformer.wte.weight", "lm_head.weight"):  # drop pad_vocab_size_multiple's padding rows
            if k in state:
                state[k] = state[k][: c.vocab_size]
        if not c.qkv_bias:  # GPT-2 always has a Q/K/V bias: zeros are the same function
            for i in range(c.num_hidden_layers):
                state[f"transformer.h.{i}.attn.c_attn.bias"] = torch.zeros(3 * c.hidden_size, dtype=self.dtype)
        gpt2.load_state_dict(state, strict=not c.tie_word_embeddings)
        gpt2.tie_weights()
        return gpt2.train(self.training)


def _is_conv1d_weight(name: str, tensor: torch.Tensor) -> bool:
    return tensor.ndim == 2 and name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))


class GPTLiteForSequenceClassification(GPTLitePreTrainedModel):
    """Backbone + a linear head read at the last real (non-pad) token of each sequence (``classifier_pooling="last"``)
    or averaged over its real tokens (``"mean"``)."""

    def __init__(self, config: GPTLiteConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPTLiteModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutputWithPast:
        out = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, return_dict=True, **kwargs,
        )
        logits = self.score(out.last_hidden_state)  # (B, T, num_labels)
        B, T = logits.shape[:2]
        if attention_mask is not None and attention_mask.ndim == 2:
            real = attention_mask[:, -T:].to(logits.device, torch.long)  # (B, T) 1 at real tokens, left or right pads
        elif input_ids is not None and self.config.pad_token_id is not None:
            real = (input_ids != self.config.pad_token_id).to(logits.device, torch.long)
        elif B == 1 or input_ids is None:
            real = torch.ones(B, T, dtype=torch.long, device=logits.device)
        else:
            raise ValueError("batched classification needs an attention_mask or config.pad_token_id")
        if self.config.classifier_pooling == "mean":  # the head averaged over real tokens (= head of the mean state)
            pooled = (logits * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        else:  # the last real token: the one position that has seen the whole text
            last = (torch.arange(T, device=logits.device) * real).argmax(-1)  # (B,)
            pooled = logits[torch.arange(B, device=logits.device), last]  # (B, num_labels)

        loss = None
        if labels is not None:  # transformers' ForSequenceClassificationLoss, by config.problem_type (set if None)
            loss = self.loss_function(labels=labels, pooled_logits=pooled, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss, logits=pooled, cache=out.cache, hidden_states=out.hidden_states, attentions=out.attentions
        )


__all__ = [
    "GPTLitePreTrainedModel",
    "GPTLiteModel",
    "GPTLiteForCausalLM",
    "GPTLiteForSequenceClassification",
]
