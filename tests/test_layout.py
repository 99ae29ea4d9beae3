"""The shape of the house: the Hub-shipped modeling pair stands alone, the generic loop knows no task, each
concept has one implementation, and the README's table lists every module."""

import ast
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "hf_gptlite"
STDLIB = set(sys.stdlib_module_names)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports as '.name'), at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


SHIPPED = ("configuration_gptlite.py", "modeling_gptlite.py", "gptlite_kernels.py")


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_modeling_files_import_only_torch_transformers_and_each_other(name):
    """Every saved config.json names the modeling pair in auto_map (trust_remote_code) and save_pretrained copies
    what they import relatively (the kernels file): they must keep their place and names and import nothing of the
    package but each other."""
    assert (PACKAGE / name).is_file()
    for module in imported_modules(PACKAGE / name):
        top = module.split(".")[0]
        assert (module in tuple("." + n.removesuffix(".py") for n in SHIPPED) or top in ("torch", "transformers")
                or top in STDLIB), f"{name} imports {module}"


def test_the_model_file_is_the_model_alone():
    """modeling_gptlite.py reads like the book: at most 420 lines, and no forward branches on the device type, the
    dtype, the number of rows or tracing (the fast paths that do live in gptlite_kernels.py)."""
    source = (PACKAGE / "modeling_gptlite.py").read_text()
    assert len(source.splitlines()) <= 420
    forwards = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "forward"]
    assert len(forwards) >= 6
    for forward in forwards:
        for node in ast.walk(forward):
            if isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
                test = ast.unparse(node.test)
                for word in ("dtype", "device", "shape[0]", "numel", "is_compiling", "is_exporting", "data_ptr"):
                    assert word not in test, f"a forward branches on {word!r}: {test}"


def test_the_generic_loop_knows_no_task():
    for path in sorted((PACKAGE / "training").glob("*.py")):
        text = path.read_text()
        for module in imported_modules(path):
            assert not re.match(r"\.\.(pretrain|spam|instruct|hub|data)\b", module), f"{path.name} imports {module}"
            assert not module.startswith("hf_gptlite."), f"{path.name} imports {module}"
        for word in ("perplexity", "bits_per_char", "accuracy", "spam", "instruction", "chat_template"):
            assert word not in text, f"training/{path.name} mentions {word!r}: a task's concern"


def _definitions(name: str) -> list[str]:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if re.search(rf"^\s*def {name}\(", path.read_text(), flags=re.M):
            hits.append(str(path.relative_to(PACKAGE)))
    return hits


@pytest.mark.parametrize("name, home", [
    ("parse_config", "cli.py"),
    ("write_metrics", "training/artifacts.py"),
    ("attach_lora", "training/artifacts.py"),
    ("save_model_folder", "training/artifacts.py"),
    ("ensure_pad_token", "tokenization.py"),
    ("check_model_dir", "loading.py"),
    ("run_entry_point", "cli.py"),
    ("is_user_error", "cli.py"),
    ("check_output_dir", "errors.py"),
    ("check_resume_checkpoint", "loading.py"),
    ("plot_loss_curve", "training/artifacts.py"),
])
def test_one_implementation_per_concept(name, home):
    assert _definitions(name) == [home]


def test_nothing_else_writes_metrics_json_or_merges_lora():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "artifacts.py":
            continue
        text = path.read_text()
        rel = path.relative_to(PACKAGE)
        assert ".merge_and_unload(" not in text and "get_peft_model(" not in text, rel
        assert not re.search(r"metrics\.json\"?\)?\.write_text|open\([^)]*metrics\.json", text), rel


def test_no_recipe_holds_logic_and_the_library_never_imports_recipes():
    for recipe in sorted((REPO / "recipes").glob("*.py")):
        if recipe.name == "spam_app.py":  # a Chainlit app: its handlers are the UI
            continue
        code = [line for line in recipe.read_text().split('"""', 2)[2].splitlines() if line.strip()]
        assert len(code) <= 4, f"{recipe.name} holds more than a call into hf_gptlite: {code}"
    for path in sorted(PACKAGE.rglob("*.py")):
        assert "recipes" not in {m.split(".")[0] for m in imported_modules(path)}, path


def test_every_entry_point_goes_through_the_one_error_wrapper():
    """Each `__main__` / console-script function of the package runs behind cli.run_entry_point (directly or via
    run_command), and nothing else prints `error:` lines."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    mains = {spec.split(":")[0].replace(".", "/") + ".py" for spec in scripts.values()}
    mains |= {str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if 'if __name__ == "__main__":' in p.read_text()}
    for rel in sorted(mains):
        text = (REPO / rel).read_text()
        if rel.endswith("__main__.py"):
            assert "from .cli import main" in text, rel
            continue
        assert "run_entry_point(" in text or "run_command(" in text, f"{rel} bypasses the error wrapper"
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "cli.py":
            continue
        text = path.read_text()
        assert 'print(f"error:' not in text, f"{path}: only the error wrapper prints error lines"


def test_card_templates_are_package_data():
    from hf_gptlite.hub.push import CARD_TEMPLATES, MODEL_CARD_DIR

    assert MODEL_CARD_DIR.is_relative_to(PACKAGE)
    for template in CARD_TEMPLATES.values():
        assert (MODEL_CARD_DIR / template).is_file()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"hub/cards/*.md"' in pyproject and '"resources/**/*"' in pyproject


def test_readme_lists_every_module():
    """Each row's first cell names files as `hf_gptlite/pretrain/config.py`, `data.py`: a bare name is in the
    folder of the path before it."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## What is inside"):]
    table = table[: table.index("\n## ", 5)]
    listed = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        folder = ""
        for name in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            if "/" in name:
                folder = name.rsplit("/", 1)[0]
                listed.add(name)
            else:
                listed.add(f"{folder}/{name}")
    modules = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" and "resources" not in p.parts)
    missing = [m for m in modules if m not in listed]
    assert not missing, f"README 'What is inside' does not list {missing}"
    stale = [m for m in listed if m.endswith(".py") and not (REPO / m).is_file()]
    assert not stale, f"README 'What is inside' lists files that do not exist: {stale}"
