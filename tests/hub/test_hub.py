"""Hub sharing: upload folder, model card, dry run, bad input, upload with the real huggingface_hub client.

No public server accepts uploads offline, so uploads go to `hub_server.FakeHub`, a Hub-protocol HTTP server
on 127.0.0.1 started by a fixture. It implements only the endpoints the real client calls: create_repo,
validate-yaml, create_branch, preupload, LFS batch + basic upload + verify (HF_HUB_DISABLE_XET=1 selects the
LFS path), commit (NDJSON), and the download side used by from_pretrained (api/models/{repo}[/revision/{rev}],
api/models/{repo}/tree/{rev}, HEAD/GET resolve/{rev}/{file} with ETag / X-Linked-Etag / X-Repo-Commit).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM, GPTLiteForSequenceClassification
from hf_gptlite.cli import parse_config, run_command
from hf_gptlite.hub.push import (
    HubUploadError,
    PushConfig,
    build_model_card,
    card_kind,
    check_model_dir,
    check_repo_id,
    prepare_upload_folder,
    push_to_hub,
    run_push,
    upload_folder,
    validate_upload_folder,
)

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import FakeHub  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_test_secret_token_do_not_leak_1234"
METRICS = {"eval_loss": 5.25, "eval_perplexity": 190.6, "eval_bits_per_char": 2.5,
           "train_runtime_s": 12.5, "tokens_per_s": 3100.0}
TRAINING_CONFIG = {"preset": "tiny", "learning_rate": 0.0004, "num_train_epochs": 1, "seed": 123,
                   "train_files": ["machado_de_assis-dom_casmurro.txt"], "language": "pt"}
CLIENT_ONLY_CALLS = {("GET", "/api/agent-harnesses")}  # best-effort agent registry fetch; errors are swallowed


def make_tokenizer(chat_template=None):
    """A tiny byte-level BPE (ids 0,1,2 = [BOS],[EOS],[PAD], like the tiny preset)."""
    texts = ["Capitu tinha olhos de cigana oblíqua e dissimulada."] * 20 + ["The quick brown fox jumps."] * 20
    try:
        from hf_gptlite.tokenization import train_bpe_tokenizer
        tok = train_bpe_tokenizer(texts, vocab_size=300)
    except ImportError:  # the shared tokenization module is not merged yet
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast
        raw = Tokenizer(models.BPE())
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        raw.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=300, special_tokens=["[BOS]", "[EOS]", "[PAD]"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]")
    if chat_template:
        tok.chat_template = chat_template
    return tok


def save_run(folder: Path, model, tokenizer, metrics=METRICS, training_config=TRAINING_CONFIG, plot=True) -> Path:
    """What a training recipe leaves behind: save_pretrained model + tokenizer + run files."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "training_config.json").write_text(json.dumps(training_config))
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([3.0, 2.0, 1.5])
        fig.savefig(folder / "loss_curve.png")
        plt.close(fig)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")).eval()
    return save_run(tmp_path_factory.mktemp("run") / "model", model, make_tokenizer())


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


def client_env(hub, home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), PYTHONPATH=str(ROOT),
               HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# A sitecustomize that makes `import hf_gptlite` fail in the child, whatever the path or the editable install
# (its finder is on sys.meta_path; this blocker goes in front of it).
BLOCKER = '''
import importlib.abc, sys
class _BlockHfGptlite(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_gptlite" or name.startswith("hf_gptlite."):
            raise ImportError("hf_gptlite is blocked in this test")
sys.meta_path.insert(0, _BlockHfGptlite())
'''

LOAD_FROM_HUB = '''
import json, sys
try:
    import hf_gptlite
    raise SystemExit("hf_gptlite should be blocked")
except ImportError:
    pass
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
repo_id, out = sys.argv[1:3]
tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True).eval()
ids = tokenizer("Capitu tinha olhos de cigana", return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits
save_file({"input_ids": ids, "logits": logits}, out)
print(json.dumps({"class": type(model).__module__, "hf_gptlite_loaded": "hf_gptlite" in sys.modules}))
'''


@pytest.mark.slow
def test_push_with_real_client_then_load_without_hf_gptlite(run_dir, hub, tmp_path, monkeypatch):
    # 1. dry run: the exact folder that would be uploaded, validated by loading it back; nothing is sent
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # present, so the dry run's token check has something to look for
    dry = tmp_path / "dry"
    summary = push_to_hub(run_dir, "tester/tiny-gptlite", dry_run=dry, max_shard_size="300KB")
    assert summary["logits_equal_to_source"] and summary["model_class"].startswith("transformers_modules.")
    assert hub.requests == []
    expected = local_files(dry)
    assert {"config.json", "configuration_gptlite.py", "modeling_gptlite.py", "gptlite_kernels.py",
            "model.safetensors.index.json",
            "tokenizer.json", "tokenizer_config.json", "generation_config.json", "metrics.json",
            "training_config.json", "loss_curve.png", "README.md"} <= set(expected)
    shards = sorted(n for n in expected if n.startswith("model-") and n.endswith(".safetensors"))
    assert len(shards) >= 2  # the tiny model (567 KB) is sharded at 300 KB
    assert json.loads(expected["config.json"])["auto_map"]["AutoModelForCausalLM"] == "modeling_gptlite.GPTLiteForCausalLM"
    for name in ("metrics.json", "training_config.json", "loss_curve.png"):
        assert expected[name] == (run_dir / name).read_bytes()

    # 2. push with the real client (the recipe, in a subprocess with HF_ENDPOINT set before import)
    recipe = [sys.executable, str(ROOT / "recipes" / "push_to_hub.py"), "--model_dir", str(run_dir),
              "--repo_id", "tester/tiny-gptlite", "--max_shard_size", "300KB", "--private",
              "--commit_message", "first push"]
    env = client_env(hub, tmp_path / "home_push", HF_TOKEN=TOKEN)
    proc = subprocess.run(recipe, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pushed" in proc.stdout and TOKEN not in proc.stdout + proc.stderr
    repo = hub.repos["tester/tiny-gptlite"]
    assert repo.private
    head = repo.branches["main"]
    assert repo.messages[head] == "first push"
    remote = hub.files("tester/tiny-gptlite")
    assert set(remote) == set(expected) | {".gitattributes"}
    for name, content in expected.items():
        assert remote[name] == content, f"{name} differs from the dry-run folder"
    assert set(shards) | {"loss_curve.png"} <= repo.lfs_paths[head]  # went through the LFS batch + PUT path
    assert sum(1 for m, p in hub.requests if m == "PUT" and p.startswith("/_lfs_upload/")) == len(shards) + 1
    assert all(a == f"Bearer {TOKEN}" for a in hub.auth_headers)
    assert not any(TOKEN.encode() in c for c in remote.values())
    assert set(hub.unhandled) <= CLIENT_ONLY_CALLS, hub.unhandled

    # 3. a fresh interpreter: empty HF_HOME, hf_gptlite blocked, only the Hub to load from
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = client_env(hub, tmp_path / "empty_home")
    env["PYTHONPATH"] = str(blocker)  # and not the repository root
    out = tmp_path / "hub_logits.safetensors"
    hub.unhandled.clear()
    proc = subprocess.run([sys.executable, "-c", LOAD_FROM_HUB, "tester/tiny-gptlite", str(out)], env=env,
                          capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["class"].startswith("transformers_modules.") and not info["hf_gptlite_loaded"]
    assert any(p.endswith("/resolve/" + head + "/model.safetensors.index.json") for _, p in hub.requests)
    assert set(hub.unhandled) <= CLIENT_ONLY_CALLS, hub.unhandled
    loaded = load_file(out)
    reference = GPTLiteForCausalLM.from_pretrained(run_dir).eval()
    with torch.no_grad():
        assert torch.equal(loaded["logits"], reference(loaded["input_ids"]).logits)


def test_filled_card_parses_and_carries_the_run_metrics(run_dir, tmp_path):
    folder = prepare_upload_folder(run_dir, tmp_path / "up", "tester/tiny-gptlite")
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "text-generation", "apache-2.0")
    assert data.language == ["pt"] and "gptlite" in data.tags
    measured = {(r.metric_type, r.dataset_split): r.metric_value for r in data.eval_results}
    assert measured == {("loss", "validation"): METRICS["eval_loss"],
                        ("perplexity", "validation"): METRICS["eval_perplexity"],
                        ("bits_per_character", "validation"): METRICS["eval_bits_per_char"]}
    assert "model-index" in card.content and "tokens_per_s" in card.text
    num_parameters = GPTLiteForCausalLM.from_pretrained(run_dir).num_parameters()
    assert f"{num_parameters:,}" in card.text and "0.0004" in card.text and "![loss curve](loss_curve.png)" in card.text
    assert "accuracy" not in card.content.lower()  # not measured -> not in the card


def _card(kind, config, metrics, training_config=None):
    files = ["config.json", "model.safetensors"]
    return build_model_card(kind, repo_id="tester/m", config=config, num_parameters=123, metrics=metrics,
                            training_config=training_config or {}, files=files)


def test_card_templates_spam_and_instruction_and_missing_metrics():
    cls_config = GPTLiteConfig.from_preset("tiny", num_labels=2, id2label={0: "ham", 1: "spam"},
                                           label2id={"ham": 0, "spam": 1})
    cls_config.architectures = ["GPTLiteForSequenceClassification"]
    spam = {"test_accuracy": 0.96, "test_f1": 0.91, "test_precision": 0.93, "test_recall": 0.89, "train_runtime_s": 40.0}
    card = ModelCard(str(_card("spam-classifier", cls_config, spam)))
    assert card.data.pipeline_tag == "text-classification"
    got = {r.metric_type: (r.metric_value, r.dataset_split) for r in card.data.eval_results}
    assert got == {"accuracy": (0.96, "test"), "f1": (0.91, "test"), "precision": (0.93, "test"), "recall": (0.89, "test")}
    assert "0=ham, 1=spam" in card.text and 'pipeline("text-classification"' in card.text

    card = ModelCard(str(_card("instruction", GPTLiteConfig.from_preset("tiny"), {"rouge_l": 0.31})))
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("rougeL", 0.31)]
    assert "apply_chat_template" in card.text

    card = ModelCard(str(_card("causal-lm", GPTLiteConfig.from_preset("tiny"), {"tokens_per_s": 10.0})))
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "wrote no evaluation metrics" in card.text
    assert card.data.language is None  # unknown -> left out, not guessed


def test_card_kind_from_architecture_and_chat_template():
    cls_config = GPTLiteConfig.from_preset("tiny")
    cls_config.architectures = ["GPTLiteForSequenceClassification"]
    lm_config = GPTLiteConfig.from_preset("tiny")
    lm_config.architectures = ["GPTLiteForCausalLM"]
    plain, chat = make_tokenizer(), make_tokenizer(chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    assert card_kind(cls_config, plain) == "spam-classifier"
    assert card_kind(lm_config, chat) == "instruction"
    assert card_kind(lm_config, plain) == "causal-lm"


def test_dry_run_classifier(tmp_path):
    torch.manual_seed(0)
    config = GPTLiteConfig.from_preset("tiny", num_labels=2, id2label={0: "ham", 1: "spam"}, label2id={"ham": 0, "spam": 1})
    model = GPTLiteForSequenceClassification(config).eval()
    run = save_run(tmp_path / "spam", model, make_tokenizer(), metrics={"test_accuracy": 0.9}, plot=False)
    summary = push_to_hub(run, "tester/spam", dry_run=tmp_path / "dry")
    assert summary["logits_equal_to_source"] and summary["model_class"].endswith("GPTLiteForSequenceClassification")
    auto_map = json.loads((tmp_path / "dry" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_gptlite.GPTLiteForSequenceClassification"
    assert ModelCard.load(tmp_path / "dry" / "README.md").data.pipeline_tag == "text-classification"


def test_instruction_model_folder_keeps_chat_template(tmp_path):
    template = "{% for m in messages %}### {{ m.role }}\n{{ m.content }}\n{% endfor %}"
    run = save_run(tmp_path / "sft", GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny")),
                   make_tokenizer(chat_template=template), metrics={"rouge_l": 0.2}, plot=False)
    folder = prepare_upload_folder(run, tmp_path / "up", "tester/sft")
    assert (folder / "chat_template.jinja").read_text() == template
    card = ModelCard.load(folder / "README.md")
    assert "instruction" in card.data.tags and card.data.eval_results[0].metric_type == "rougeL"


def test_validation_catches_a_folder_that_does_not_load(run_dir, tmp_path):
    folder = prepare_upload_folder(run_dir, tmp_path / "up", "tester/x")
    (folder / "modeling_gptlite.py").unlink()
    with pytest.raises(RuntimeError, match="does not load back"):
        validate_upload_folder(folder)


@pytest.mark.parametrize("step", ["lfs_upload", "commit"])
def test_upload_failing_halfway_then_rerun_completes(run_dir, hub, tmp_path, monkeypatch, step):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the LFS path
    folder = prepare_upload_folder(run_dir, tmp_path / "up", "tester/resume")
    hub.fail_once = {step}
    with pytest.raises(HubUploadError, match="Re-run the same command"):
        upload_folder(folder, "tester/resume", endpoint=hub.url)
    repo = hub.repos["tester/resume"]
    assert set(hub.files("tester/resume")) == {".gitattributes"}  # nothing committed
    puts_before = sum(1 for m, p in hub.requests if m == "PUT")
    upload_folder(folder, "tester/resume", endpoint=hub.url)
    remote = hub.files("tester/resume")
    assert {n: remote[n] for n in local_files(folder)} == local_files(folder)
    puts_again = sum(1 for m, p in hub.requests if m == "PUT") - puts_before
    assert puts_again == (1 if step == "lfs_upload" else 0)  # blobs stored before the failure are not re-sent
    commits = len(repo.commits)
    upload_folder(folder, "tester/resume", endpoint=hub.url)  # nothing changed -> no new commit
    assert len(repo.commits) == commits


def test_upload_to_a_branch(run_dir, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    folder = prepare_upload_folder(run_dir, tmp_path / "up", "tester/branchy")
    upload_folder(folder, "tester/branchy", revision="experiment-1", commit_message="on a branch", endpoint=hub.url)
    assert set(hub.files("tester/branchy", "main")) == {".gitattributes"}
    assert hub.files("tester/branchy", "experiment-1")["config.json"] == (folder / "config.json").read_bytes()
    upload_folder(folder, "tester/branchy", revision="experiment-1", endpoint=hub.url)  # branch exists: fine


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "user/bad name", "user/na--me", "-user/x", ""])
def test_bad_repo_id(repo_id):
    with pytest.raises(ValueError, match="repo_id"):
        check_repo_id(repo_id)


def test_bad_model_folders(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_dir(tmp_path / "missing")
    no_config = shutil.copytree(run_dir, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_to_hub(no_config, "tester/x", dry_run=tmp_path / "out1")
    no_weights = shutil.copytree(run_dir, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors.*pytorch_model\.bin"):
        push_to_hub(no_weights, "tester/x", dry_run=tmp_path / "out2")
    no_tok = shutil.copytree(run_dir, tmp_path / "no_tok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / name).unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        check_model_dir(no_tok)
    bad_metrics = shutil.copytree(run_dir, tmp_path / "bad_metrics")
    (bad_metrics / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        prepare_upload_folder(bad_metrics, tmp_path / "out3", "tester/x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_upload_folder(run_dir, tmp_path / "busy", "tester/x")
    assert not (tmp_path / "out3").exists()  # a failed prepare leaves nothing behind


def test_refuses_a_folder_that_would_publish_the_token(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    leaky = shutil.copytree(run_dir, tmp_path / "leaky")
    (leaky / "training_config.json").write_text(json.dumps({**TRAINING_CONFIG, "notes": f"pushed with {TOKEN}"}))
    with pytest.raises(ValueError, match=r"README.md, training_config.json contain\(s\) your Hub token") as err:
        prepare_upload_folder(leaky, tmp_path / "out", "tester/x")
    assert TOKEN not in str(err.value) and not (tmp_path / "out").exists()


def test_recipe_without_token_says_how_to_log_in(run_dir, hub, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    with pytest.raises(PermissionError, match=r"no Hugging Face token found: set HF_TOKEN or run `hf auth login`"):
        run_push(parse_config(PushConfig, ["--model_dir", str(run_dir), "--repo_id", "tester/x"]))
    assert run_command("push_to_hub", ["--model_dir", str(run_dir), "--repo_id", "tester/x"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no Hugging Face token found")
    assert hub.requests == []


def test_recipe_reads_yaml_config_and_cli_overrides(run_dir, tmp_path):
    (tmp_path / "push.yaml").write_text(f"model_dir: {run_dir}\nrepo_id: tester/from-yaml\nprivate: true\n")
    cfg = parse_config(PushConfig, ["--config", str(tmp_path / "push.yaml"), "--repo_id", "tester/from-cli"])
    assert (cfg.model_dir, cfg.repo_id, cfg.private) == (str(run_dir), "tester/from-cli", True)
