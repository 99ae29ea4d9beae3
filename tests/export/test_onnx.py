"""ONNX (and OpenVINO, slow) through transformers' exporters, checked on the runtime itself: prefill logits within
1e-4 of PyTorch at two sequence lengths, and greedy decoding through the prefill/decode graphs gives our tokens."""

import importlib.util

import pytest
import torch
from export_helpers import novels_head, novels_tokenizer_fixture, tiny_dir_fixture  # noqa: F401


def _generate(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    """PyTorch's greedy continuation of exactly ``n`` tokens (no early end-of-text)."""
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              min_new_tokens=n)


RUNTIMES = {
    "onnx": pytest.param(
        "onnx",
        marks=pytest.mark.skipif(
            not all(importlib.util.find_spec(p) for p in ("onnxruntime", "onnx", "onnxscript")),
            reason="onnxruntime / onnx / onnxscript not installed (pip install 'hf_gptlite[export]')",
        ),
    ),
    "openvino": pytest.param(
        "openvino",
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed"),
        ],
    ),
}


@pytest.fixture(scope="module", params=list(RUNTIMES.values()))
def exported(request, tiny_dir, tmp_path_factory):
    """The tiny folder exported by `python -m hf_gptlite export --format F` (its in-process entry point)."""
    from hf_gptlite import cli

    out = tmp_path_factory.mktemp("exported") / request.param
    assert (
        cli.main(
            ["export", "--format", request.param, "--model_dir", str(tiny_dir), "--output_dir", str(out)]
        )
        == 0
    )
    return request.param, out


def test_runtime_logits_and_greedy_tokens_are_ours(exported, tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_gptlite.export.onnx import greedy_generate, load_exported

    fmt, folder = exported
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    runtime = load_exported(folder)
    assert runtime.export_format == fmt and set(runtime.components) == {"prefill", "decode"}
    gen = torch.Generator().manual_seed(0)
    for length in (5, 37):  # two sequence lengths, batch 2: the axes are dynamic
        ids = torch.randint(3, model.config.vocab_size, (2, length), generator=gen)
        out = runtime.runners["prefill"](input_ids=ids, position_ids=torch.arange(length).expand(2, length))
        with torch.no_grad():
            want = model(ids).logits
        assert out.logits.shape == want.shape
        assert (out.logits - want).abs().max() < 1e-4, (fmt, length)

    tok = AutoTokenizer.from_pretrained(folder)  # the export carries the tokenizer
    prompts = [text[:80] for text in novels_head(200)[:3]]
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        want = _generate(model, ids, 24)
        got = greedy_generate(runtime, ids, 24)
        assert got.tolist() == want.tolist(), prompt
        assert (
            len(set(got[0, ids.shape[1] :].tolist())) > 3
        )  # a continuation that varies, not one repeated token
    batch = torch.stack([tok(p, return_tensors="pt").input_ids[0, :12] for p in prompts])
    assert greedy_generate(runtime, batch, 16).tolist() == _generate(model, batch, 16).tolist()


def test_export_refuses_a_non_empty_output_folder(tiny_dir, tmp_path, capsys):
    from hf_gptlite import cli

    (tmp_path / "keep.txt").write_text("mine")
    args = ["export", "--format", "onnx", "--model_dir", str(tiny_dir), "--output_dir", str(tmp_path)]
    assert cli.main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: output folder {str(tmp_path)!r} exists and is not empty; pick a new one"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.skipif(not all(importlib.util.find_spec(p) for p in ("onnxruntime", "onnx", "onnxscript")),
                    reason="onnxruntime / onnx / onnxscript not installed (pip install 'hf_gptlite[export]')")
def test_export_after_another_dynamic_cache_pytree_registration(tiny_dir, tmp_path, restore_pytree_registry):
    """A process that registered DynamicCache for torch.export first (transformers' executorch helper, which the
    exporters would keep) still exports, loads and decodes: the same greedy tokens as PyTorch."""
    from torch.fx import _pytree as fx_pytree
    from torch.utils import _pytree as pytree
    from transformers import AutoModelForCausalLM, DynamicCache
    from transformers.integrations.executorch import register_dynamic_cache_export_support

    from hf_gptlite.export.onnx import greedy_generate, load_exported, save_for_runtime

    def only_the_helpers_registration():
        if DynamicCache in pytree.SUPPORTED_NODES:  # an export in this process registered the exporters' one
            pytree._deregister_pytree_node(DynamicCache)
            fx_pytree.SUPPORTED_NODES.pop(DynamicCache, None)
        register_dynamic_cache_export_support()

    only_the_helpers_registration()  # before it: "Constant tensor lifted_tensor_8 is not in the constants dictionary"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    save_for_runtime(model, tmp_path / "onnx")
    only_the_helpers_registration()  # before it: "Deserializing transformers.cache_utils:DynamicCache ... not registered"
    ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    assert greedy_generate(load_exported(tmp_path / "onnx"), ids, 12).tolist() == _generate(model, ids, 12).tolist()
