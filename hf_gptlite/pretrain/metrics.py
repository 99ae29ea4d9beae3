"""Language-model metrics, handed to the generic loop as its metric function: perplexity and bits per character.

The loop measures the mean loss in nats per predicted token over the whole validation set (``EvalLoss``). From it:

    perplexity     = exp(loss)
    bits per char  = loss * tokens / ln 2 / characters     (needs the validation text's character count and a
                                                             complete evaluation; comparable across tokenizers)
"""

from __future__ import annotations

import math

from ..training import EvalLoss


def lm_metrics(num_characters: int | None = None):
    """The metric function of a causal-LM task; ``num_characters``: the characters the validation set scores
    (``LMData.eval_num_characters``), for bits per character."""

    def compute(model, accelerator, measured: EvalLoss) -> dict[str, float]:
        if measured.loss is None:
            return {}
        metrics = {"eval_perplexity": math.exp(min(measured.loss, 700.0)), "eval_tokens": measured.num_items}
        if num_characters and measured.complete:
            metrics["eval_bits_per_char"] = measured.loss * measured.num_items / math.log(2) / num_characters
        return metrics

    return compute


__all__ = ["lm_metrics"]
