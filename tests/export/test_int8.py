"""int8 weight-only through transformers' quantization_config (torchao): logits cosine >= 0.999 and held-out loss
within 1% of fp32, every block Linear int8, save -> load exact, and the `export --format int8` command."""

import json

import pytest
import torch
from export_helpers import novels_head, novels_tokenizer_fixture, tiny_dir_fixture  # noqa: F401

pytest.importorskip("torchao", reason="torchao is not installed (pip install 'hf_gptlite[export]')")


def held_out_ids(tokenizer):
    """Text the tokenizer was not trained on: characters 40,000-42,000 of each novel, 128-token rows."""
    from hf_gptlite.data.text import clean_book_text, default_corpus_files, read_text_files

    ids = sum(
        (
            tokenizer(clean_book_text(t)[40_000:42_000])["input_ids"]
            for t in read_text_files(default_corpus_files())
        ),
        [],
    )
    rows = len(ids) // 128
    return torch.tensor(ids[: rows * 128]).view(rows, 128)


def test_int8_logits_loss_and_round_trip(tiny_dir, novels_tokenizer, tmp_path, capsys):
    from torchao.quantization import Int8Tensor
    from transformers import AutoModelForCausalLM

    from hf_gptlite import cli
    from hf_gptlite.export.int8 import load_int8

    fp32 = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    int8 = load_int8(tiny_dir)
    linears = {n: m for n, m in int8.named_modules() if isinstance(m, torch.nn.Linear)}
    assert all(isinstance(m.weight, Int8Tensor) for n, m in linears.items() if n != "lm_head")
    assert len([n for n in linears if n != "lm_head"]) == 4 * fp32.config.num_hidden_layers
    ids = held_out_ids(novels_tokenizer)
    with torch.no_grad():
        a, b = fp32(ids, labels=ids), int8(ids, labels=ids)
    cosine = torch.nn.functional.cosine_similarity(a.logits.flatten(), b.logits.flatten(), dim=0)
    assert cosine >= 0.999, cosine
    assert abs(b.loss - a.loss) <= 0.01 * a.loss, (a.loss, b.loss)
    assert not torch.equal(a.logits, b.logits)  # the int8 model is really another model

    out = tmp_path / "int8"
    assert (
        cli.main(["export", "--format", "int8", "--model_dir", str(tiny_dir), "--output_dir", str(out)]) == 0
    )
    assert "wrote" in capsys.readouterr().out
    assert "quantization_config" in json.loads((out / "config.json").read_text())
    weights = (out / "model.safetensors").stat().st_size
    assert weights < 0.8 * (tiny_dir / "model.safetensors").stat().st_size
    again = load_int8(out)  # read back as saved, not quantized again
    assert isinstance(again.transformer.h[0].mlp.c_fc.weight, Int8Tensor)
    for (name, p), q in zip(int8.state_dict().items(), again.state_dict().values()):
        if isinstance(p, Int8Tensor):
            assert torch.equal(p.qdata, q.qdata) and torch.equal(p.scale, q.scale), name
        else:
            assert torch.equal(p, q), name
    with torch.no_grad():
        assert torch.equal(again(ids).logits, b.logits)
    prompt = novels_tokenizer(novels_head(100)[0][:60], return_tensors="pt").input_ids
    assert torch.equal(
        again.generate(prompt, max_new_tokens=12, do_sample=False),
        int8.generate(prompt, max_new_tokens=12, do_sample=False),
    )
