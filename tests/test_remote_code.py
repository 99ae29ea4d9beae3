"""A saved folder is a model on its own: copied elsewhere, it loads with trust_remote_code=True in an interpreter
where hf_gptlite cannot be imported, runs its own copy of the kernels file, and generates the tokens the package's
model generates."""

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap

import torch
from conftest import random_gpt2

from hf_gptlite import GPTLiteForCausalLM
from hf_gptlite.gptlite_kernels import enabled

SCRIPT = textwrap.dedent(
    """
    import json, sys
    try:
        import hf_gptlite
        raise SystemExit(f"hf_gptlite is importable here: {hf_gptlite.__file__}")
    except ImportError:
        pass
    import torch
    from transformers import AutoModelForCausalLM
    folder, prompt = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    x = torch.tensor(prompt)
    with torch.no_grad():
        out = model.generate(x, max_new_tokens=24, do_sample=False, return_dict_in_generate=True)
        beams = model.generate(x, max_new_tokens=12, do_sample=False, num_beams=3)
    kernels = [m for m in sys.modules if m.endswith(".gptlite_kernels")]
    print(json.dumps({"greedy": out.sequences.tolist(), "beams": beams.tolist(), "kernels": kernels,
                      "class": type(model).__module__, "cache": type(out.cache).__name__,
                      "attn": model.config._attn_implementation,
                      "hf_gptlite": any(m.split(".")[0] == "hf_gptlite" for m in sys.modules)}))
    """
)


def run_isolated(args, cwd, hf_home):
    """`python -S`: no site-packages .pth file runs, so the editable install's finder for hf_gptlite is never
    installed; the site-packages folders are put on the path by hand, the checkout is not (clean PYTHONPATH, cwd
    outside it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(PYTHONPATH=os.pathsep.join(site.getsitepackages()), HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-S", "-c", SCRIPT, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_copied_folder_generates_the_same_tokens_without_the_package(tmp_path):
    model = GPTLiteForCausalLM.from_gpt2(random_gpt2(seed=3)).eval()
    model.save_pretrained(tmp_path / "saved")
    folder = shutil.copytree(tmp_path / "saved", tmp_path / "elsewhere" / "model")
    assert {"configuration_gptlite.py", "modeling_gptlite.py", "gptlite_kernels.py"} <= set(os.listdir(folder))
    prompt = torch.randint(3, 320, (2, 6))
    with torch.no_grad():
        want = model.generate(prompt, max_new_tokens=24, do_sample=False)
        want_beams = model.generate(prompt, max_new_tokens=12, do_sample=False, num_beams=3)
    (tmp_path / "cwd").mkdir()
    got = run_isolated([str(folder), json.dumps(prompt.tolist())], tmp_path / "cwd", tmp_path / "hf_home")
    assert not got["hf_gptlite"] and got["class"].startswith("transformers_modules")
    assert got["kernels"] and all(k.startswith("transformers_modules") for k in got["kernels"])
    assert got["attn"] == model.config._attn_implementation  # GPTLITE_FAST_PATHS reaches the child
    assert got["cache"] == ("GrowingCache" if enabled("cache") else "DynamicCache")
    assert got["greedy"] == want.tolist()
    assert got["beams"] == want_beams.tolist()
