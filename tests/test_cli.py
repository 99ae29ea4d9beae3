"""The one command-line layer: YAML under flags, every shipped config parses against its command."""

from pathlib import Path

import pytest
from conftest import REPO

from hf_gptlite.cli import COMMANDS, _load, parse_config
from hf_gptlite.pretrain import PretrainConfig


def test_parse_config_yaml_then_command_line(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("learning_rate: 1e-3\nmax_steps: 7\ntrain_files: [a.txt, b.txt]\nstreaming: true\n")
    cfg = parse_config(PretrainConfig, ["--config", str(yaml_file), "--max_steps", "9", "--seed", "3"])
    assert cfg.learning_rate == 1e-3 and isinstance(cfg.learning_rate, float)
    assert (cfg.max_steps, cfg.seed, cfg.train_files, cfg.streaming) == (9, 3, ["a.txt", "b.txt"], True)
    yaml_file.write_text("max_stepz: 7\n")
    with pytest.raises(ValueError, match="unknown config key 'max_stepz' \\(did you mean max_steps\\?\\)"):
        parse_config(PretrainConfig, ["--config", str(yaml_file)])


def test_shipped_configs_parse():
    for name in ("pretrain_pt_tiny.yaml", "pretrain_gpt2_small_gpu.yaml"):
        cfg = parse_config(PretrainConfig, ["--config", str(REPO / "recipes" / "configs" / name)])
        assert cfg.output_dir.startswith("runs/")
    gpu = parse_config(PretrainConfig, ["--config", str(REPO / "recipes/configs/pretrain_gpt2_small_gpu.yaml")])
    assert gpu.model_preset == "gpt2-small" and gpu.block_size <= 1024


def _recipe_command(recipe: Path) -> str:
    """The command a recipe runs (each recipe is `sys.exit(run_command("NAME"))`)."""
    import re

    found = re.findall(r'run_command\("(\w+)"\)', recipe.read_text())
    assert len(found) == 1, f"{recipe} should run exactly one command"
    return found[0]


# recipes/configs/NAME.yaml -> the recipe whose flags it holds (accelerate_*.yaml are accelerate's own configs)
CONFIG_RECIPES = {"pretrain": "pretrain.py", "finetune_spam": "finetune_spam.py",
                  "finetune_instruct": "finetune_instruct.py", "evaluate_instruct": "evaluate_instruct.py"}


@pytest.mark.parametrize("config", sorted((REPO / "recipes" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses_against_its_recipe(config):
    if config.name.startswith("accelerate_"):
        from accelerate.commands.config.config_args import load_config_from_file

        loaded = load_config_from_file(str(config))
        assert loaded.num_processes >= 1 and loaded.mixed_precision in ("no", "bf16", "fp16")
        return
    recipe = next(REPO / "recipes" / r for prefix, r in CONFIG_RECIPES.items() if config.name.startswith(prefix))
    config_class = _load(COMMANDS[_recipe_command(recipe)][0])
    cfg = parse_config(config_class, ["--config", str(config)])
    assert isinstance(cfg, config_class)


def test_every_recipe_is_a_command_of_the_table():
    recipes = sorted((REPO / "recipes").glob("*.py"))
    commands = {r.name: _recipe_command(r) for r in recipes if r.name != "spam_app.py"}  # spam_app: chainlit
    assert set(commands.values()) <= set(COMMANDS) and len(commands) == 7, commands
    for name, command in commands.items():
        assert name == f"{command}.py", (name, command)
