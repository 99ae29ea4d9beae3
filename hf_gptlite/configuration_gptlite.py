"""GPTLite configuration.

HF-standard names (``hidden_size``, ``num_hidden_layers`` ...) are the real fields, so generic tools
(PEFT, accelerate, ``transformers serve``) read them; the book's names (``emb_dim``, ``context_length``,
``n_layers``, ``n_heads``, ``drop_rate``) are aliases through ``attribute_map``.

This file imports only ``transformers``: it ships with the weights for ``trust_remote_code`` loading.
"""

from transformers import PreTrainedConfig

# Presets. The non-GPT-2 ones use the project tokenizer's special ids: [BOS]=0, [EOS]=1, [PAD]=2.
_OWN_SPECIALS = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
_GPT2_SPECIALS = dict(bos_token_id=50256, eos_token_id=50256)
PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128, vocab_size=512, **_OWN_SPECIALS),
    # the CPU main job's shape (1.9M parameters), chosen by measurement: bench/sweep_pretrain.py, README "Pretraining"
    "cpu-main": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, max_position_embeddings=256, vocab_size=8192, **_OWN_SPECIALS),
    "cpu-small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=256, vocab_size=8192, **_OWN_SPECIALS),
    "gpt2-small": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=1024, vocab_size=50257, **_GPT2_SPECIALS),
    "gpt2-medium": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, max_position_embeddings=1024, vocab_size=50257, **_GPT2_SPECIALS),
    "gpt2-large": dict(hidden_size=1280, num_hidden_layers=36, num_attention_heads=20, max_position_embeddings=1024, vocab_size=50257, **_GPT2_SPECIALS),
    "gpt2-xl": dict(hidden_size=1600, num_hidden_layers=48, num_attention_heads=25, max_position_embeddings=1024, vocab_size=50257, **_GPT2_SPECIALS),
}


class GPTLiteConfig(PreTrainedConfig):
    """Configuration of a GPTLite model (a GPT-2-style decoder).

    Example::

        >>> from hf_gptlite import GPTLiteConfig
        >>> GPTLiteConfig.from_preset("gpt2-small").hidden_size
        768
        >>> GPTLiteConfig(emb_dim=128, n_heads=4, n_layers=2, context_length=64).max_position_embeddings
        64
    """

    model_type = "gptlite"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        # the book's names -> HF names
        "emb_dim": "hidden_size",
        "context_length": "max_position_embeddings",
        "n_layers": "num_hidden_layers",
        "n_heads": "num_attention_heads",
        "drop_rate": "hidden_dropout_prob",
        # GPT-2's names, read by some tools
        "n_embd": "hidden_size",
        "n_positions": "max_position_embeddings",
        "n_layer": "num_hidden_layers",
        "n_head": "num_attention_heads",
        "layer_norm_epsilon": "layer_norm_eps",
    }

    vocab_size: int = 50257
    max_position_embeddings: int = 1024
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int | None = None  # None -> 4 * hidden_size
    hidden_dropout_prob: float = 0.1  # embeddings and residual branches
    attention_probs_dropout_prob: float | None = None  # None -> hidden_dropout_prob
    layer_norm_eps: float = 1e-5
    qkv_bias: bool = True
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = True
    # round the embedding/output rows up to a multiple of this (64 suits GPU matmuls); logits keep vocab_size columns
    pad_vocab_size_multiple: int | None = None
    # GPTLiteForSequenceClassification reads the head at the last real token ("last") or averages it over the real
    # tokens ("mean")
    classifier_pooling: str = "last"
    bos_token_id: int | None = None  # set from the tokenizer (tokenization.align_config_with_tokenizer)
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.attention_probs_dropout_prob is None:
            self.attention_probs_dropout_prob = self.hidden_dropout_prob
        self.check()

    def check(self):
        """Raise ``ValueError`` naming the first invalid field."""
        for name in ("vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTLiteConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"GPTLiteConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"GPTLiteConfig.{name} must be in [0, 1), got {value!r}")
        m = self.pad_vocab_size_multiple
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m <= 0):
            raise ValueError(f"GPTLiteConfig.pad_vocab_size_multiple must be a positive integer or None, got {m!r}")
        if self.classifier_pooling not in ("last", "mean"):
            raise ValueError(f"GPTLiteConfig.classifier_pooling must be 'last' or 'mean', got {self.classifier_pooling!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"GPTLiteConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        for name in ("bos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"GPTLiteConfig.{name}={value} is outside the vocabulary (size {self.vocab_size})")

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding / output layer: vocab_size rounded up to pad_vocab_size_multiple."""
        m = self.pad_vocab_size_multiple or 1
        return -(-self.vocab_size // m) * m

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTLiteConfig":
        """``tiny``, ``cpu-main``, ``cpu-small``, ``gpt2-small`` (124M), ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["GPTLiteConfig", "PRESETS"]
