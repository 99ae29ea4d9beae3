"""Attention, step by step — the progression of "Build a Large Language Model (From Scratch)", chapter 3.

Each class adds one idea to the previous one:

1. ``SimpleSelfAttention``  no trainable weights: similarities x·x, softmax, weighted sum.
2. ``SelfAttention``        trainable query / key / value projections, scaled by 1/sqrt(d_out).
3. ``CausalAttention``      a triangular mask so a token sees only itself and the past, plus dropout.
4. ``MultiHeadAttention``   several causal heads in parallel, computed as one batched matmul, then an
                            output projection. This is exactly what the model's ``GPTLiteAttention`` computes
                            (``from_model_attention`` copies its weights; a test checks the outputs agree).

These classes are for reading and experimenting. Read on in ``modeling_gptlite.py``: ``eager_attention_forward`` is
step 4's softmax(q k^T / sqrt(hd) + mask) v on already-split heads, and ``GPTLiteAttention`` is step 4 with one fused
Q/K/V projection, the KV cache and the kernels transformers offers by name (sdpa, flash, flex).
Shapes: B = batch, T = tokens, d_in / d_out = feature sizes.
"""

from __future__ import annotations

import torch
from torch import nn


class SimpleSelfAttention(nn.Module):
    """Context vector of token i = sum_j softmax_j(x_i · x_j) x_j. Nothing is learned."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d) or (T, d)
        scores = x @ x.transpose(-2, -1)  # (B, T, T): how similar each pair of tokens is
        weights = torch.softmax(scores, dim=-1)  # each row sums to 1
        return weights @ x  # (B, T, d)


class SelfAttention(nn.Module):
    """Scaled dot-product attention with trainable projections W_query, W_key, W_value."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_in)
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (B, T, d_out)
        scores = queries @ keys.transpose(-2, -1)  # (B, T, T)
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        return weights @ values  # (B, T, d_out)


class CausalAttention(SelfAttention):
    """SelfAttention where token i may not look at tokens j > i, with dropout on the attention weights."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__(d_in, d_out, qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # 1 above the diagonal = "future, hide it"; a buffer moves with .to(device) but is not trained
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_in)
        T = x.shape[1]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.transpose(-2, -1)  # (B, T, T)
        scores = scores.masked_fill(self.mask[:T, :T], float("-inf"))  # softmax turns -inf into 0
        weights = self.dropout(torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1))
        return weights @ values  # (B, T, d_out)


class MultiHeadAttention(nn.Module):
    """num_heads causal attentions of size d_out / num_heads each, run as one batched computation."""

    def __init__(self, d_in: int, d_out: int, context_length: int, num_heads: int,
                 dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes what the heads found
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_in)
        B, T, _ = x.shape

        def split_heads(t):  # (B, T, d_out) -> (B, heads, T, head_dim)
            return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

        queries, keys, values = split_heads(self.W_query(x)), split_heads(self.W_key(x)), split_heads(self.W_value(x))
        scores = queries @ keys.transpose(-2, -1)  # (B, heads, T, T)
        scores = scores.masked_fill(self.mask[:T, :T], float("-inf"))
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        context = (weights @ values).transpose(1, 2).reshape(B, T, -1)  # (B, T, d_out): heads side by side
        return self.out_proj(context)

    @classmethod
    def from_model_attention(cls, attn) -> MultiHeadAttention:
        """Copy the weights of a ``GPTLiteAttention`` (fused ``c_attn`` = [W_query; W_key; W_value])."""
        d_out = attn.c_proj.out_features
        mha = cls(d_out, d_out, attn.config.max_position_embeddings, attn.num_heads,
                  qkv_bias=attn.c_attn.bias is not None)
        with torch.no_grad():
            for proj, w in zip((mha.W_query, mha.W_key, mha.W_value), attn.c_attn.weight.split(d_out, dim=0)):
                proj.weight.copy_(w)
            if attn.c_attn.bias is not None:
                for proj, b in zip((mha.W_query, mha.W_key, mha.W_value), attn.c_attn.bias.split(d_out)):
                    proj.bias.copy_(b)
            mha.out_proj.load_state_dict(attn.c_proj.state_dict())
        return mha.to(attn.c_attn.weight.dtype)


__all__ = ["SimpleSelfAttention", "SelfAttention", "CausalAttention", "MultiHeadAttention"]
