"""What hf_gptlite relies on in its dependencies, checked directly, so that a release that changes it fails HERE
with the dependency's name and version, not later as a downstream traceback or an HTTP 500.

The supported range is pyproject.toml's (tested: the newest releases in .ci/run's first job, the lowest in
ci/constraints-min.txt in its second); these tests run in both.
"""

import ast
import importlib
import inspect
from importlib.metadata import version
from pathlib import Path

import accelerate
import pytest
import torch
import transformers
from packaging.version import Version

PACKAGE = Path(__file__).resolve().parents[1] / "hf_gptlite"
TF = f"transformers {transformers.__version__}"
ACC = f"accelerate {accelerate.__version__}"


def _imported_names(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from transformers... import name`` / ``from accelerate... import name``."""
    pairs = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in ("transformers", "accelerate"):
                pairs += [(node.module, alias.name) for alias in node.names]
    return pairs


IMPORTS = sorted({(str(p.relative_to(PACKAGE)), m, n) for p in PACKAGE.rglob("*.py") for m, n in _imported_names(p)})


@pytest.mark.parametrize("where, module, name", IMPORTS, ids=[f"{m}.{n}" for _, m, n in IMPORTS])
def test_every_name_the_package_imports_exists(where, module, name):
    """Internal import paths move between minor releases (``transformers.utils.deprecation``,
    ``transformers.masking_utils``, ``accelerate.state``...)."""
    dist = module.split(".")[0]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{dist} {version(dist)}: hf_gptlite/{where} imports {module}, which fails: {e}")
    if not hasattr(mod, name):  # `from transformers import initialization` names a submodule
        try:
            importlib.import_module(f"{module}.{name}")
        except ImportError:
            pytest.fail(f"{dist} {version(dist)}: {module} has no {name} (imported by hf_gptlite/{where})")


def test_serve_resolves_the_architecture_by_name_in_a_process_that_unpickles_the_loader():
    """hf_gptlite.serve hands ``transformers serve`` a ModelLoader subclass (5.25+: pickled into the spawned model
    process) and puts the classes where ``_load_model`` looks them up: ``getattr(transformers, architecture)``."""
    pytest.importorskip("fastapi", reason="transformers[serving] is not installed")
    from transformers.cli import serve as serve_cli
    from transformers.cli.serving import model_manager

    source = inspect.getsource(model_manager)
    assert "getattr(transformers, config.architectures[0])" in source or "AutoModel" in source, (
        f"{TF}: transformers serve no longer resolves a model class by `getattr(transformers, architecture)`; "
        "check how it loads a model (transformers/cli/serving/model_manager.py) and update hf_gptlite/serve.py")
    if Version(transformers.__version__) >= Version("5.25"):
        assert hasattr(model_manager, "ModelLoader"), (
            f"{TF}: transformers/cli/serving/model_manager.py has no ModelLoader; hf_gptlite/serve.py subclasses it "
            "to carry the GPTLite registration into the model's process")
        assert "ModelLoader(" in inspect.getsource(serve_cli.Serve), (
            f"{TF}: Serve no longer builds a ModelLoader; hf_gptlite/serve.py swaps in its subclass there")
        assert "spawn" in source and "loader.load_model_and_processor" in source, (
            f"{TF}: the model process is no longer started from the pickled loader; re-check hf_gptlite/serve.py")


def test_deprecate_kwarg_maps_past_key_values_to_cache():
    """The model's forwards take ``cache`` and accept the old ``past_key_values`` through transformers'
    ``deprecate_kwarg`` (the 5.x rename)."""
    from transformers.utils.deprecation import deprecate_kwarg

    @deprecate_kwarg("past_key_values", "99.0.0", new_name="cache")
    def f(cache=None):
        return cache

    with pytest.warns(FutureWarning):
        out = f(past_key_values="x")
    assert out == "x", f"{TF}: deprecate_kwarg no longer renames past_key_values to cache"


def test_attention_interface_registers_and_resolves_a_named_implementation():
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def probe(module, query, key, value, attention_mask, **kwargs):
        return query, None

    AttentionInterface.register("hf_gptlite_contract_probe", probe)
    assert ALL_ATTENTION_FUNCTIONS["hf_gptlite_contract_probe"] is probe, (
        f"{TF}: AttentionInterface.register no longer reaches ALL_ATTENTION_FUNCTIONS")
    assert hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"), f"{TF}: ALL_ATTENTION_FUNCTIONS.get_interface is gone"


def test_dynamic_cache_grows_per_layer():
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    k = torch.randn(1, 2, 3, 4)
    keys, values = cache.update(k, k, 0)
    keys, values = cache.update(k, k, 0)
    assert keys.shape == (1, 2, 6, 4) and cache.get_seq_length() == 6, (
        f"{TF}: DynamicCache.update no longer concatenates along the sequence axis")


def test_loss_registry_has_the_causal_lm_loss():
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    assert LOSS_MAPPING.get("ForCausalLM") is ForCausalLMLoss, f"{TF}: LOSS_MAPPING['ForCausalLM'] changed"


def test_accelerate_state_can_be_reset_between_runs():
    """training/ trains several times in one process (tests, notebooks): it resets accelerate's singletons."""
    from accelerate.state import AcceleratorState, GradientState

    params = inspect.signature(AcceleratorState._reset_state).parameters
    assert "reset_partial_state" in params, f"{ACC}: AcceleratorState._reset_state(reset_partial_state=) is gone"
    assert callable(getattr(GradientState, "_reset_state", None)), f"{ACC}: GradientState._reset_state is gone"


def test_pyproject_lower_bounds_are_the_tested_lowest_versions():
    """pyproject.toml's lower bounds and ci/constraints-min.txt (what .ci/min_versions.sh installs and tests) are
    the same numbers, so no lower bound is an untested claim."""
    import re
    import tomllib

    from packaging.requirements import Requirement

    root = PACKAGE.parent
    pinned = {}
    for line in (root / "ci" / "constraints-min.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pinned[m[1].lower().replace("_", "-")] = m[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    bounds = {}
    for dep in deps:
        req = Requirement(dep)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if lows:
            bounds[req.name.lower().replace("_", "-")] = lows[0]
    for name, low in pinned.items():
        assert name in bounds, f"ci/constraints-min.txt pins {name}=={low}, pyproject.toml gives it no lower bound"
        assert Version(bounds[name]) == Version(low), (
            f"{name}: pyproject.toml says >={bounds[name]}, ci/constraints-min.txt tests {low}")
    for name in ("torch", "transformers", "accelerate", "datasets", "peft", "huggingface-hub", "tokenizers"):
        assert name in pinned, f"{name} has no tested lowest version in ci/constraints-min.txt"
