"""Generation, ROUGE-L, metrics.json, judge outage and chat for instruction-tuned models (tiny, in-process)."""

import copy
import json
import socket

import pytest
import torch
from instruct_models import wired_forty_two

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.instruct import ChatConfig, EvaluateInstructConfig, run_chat, run_evaluate_instruct
from hf_gptlite.instruct.data import record_to_messages, set_chat_template
from hf_gptlite.instruct.evaluate import rouge_l
from hf_gptlite.instruct.generation import generate_responses
from hf_gptlite.instruct.judge import JudgeUnreachableError

# 20 records -> 17 train, 2 test, 1 validation (the book's 85/10/5 slices)
RECORDS = [{"instruction": f"Question number {i}?", "input": "" if i % 2 else f"context {i}", "output": f"Answer {i}."}
           for i in range(17)]
RECORDS += [{"instruction": "What is six times seven?", "input": "", "output": "42"},
            {"instruction": "And the answer?", "input": "life", "output": "The answer is 42"},
            {"instruction": "Validation only.", "input": "", "output": "v"}]


@pytest.fixture
def chat_tokenizer(byte_tokenizer):
    return set_chat_template(copy.deepcopy(byte_tokenizer))


@pytest.fixture
def forty_two_dir(chat_tokenizer, tmp_path):
    folder = tmp_path / "model42"
    wired_forty_two(chat_tokenizer, max_position_embeddings=512).save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(RECORDS))
    return folder, data


def test_batched_left_padded_generation_matches_one_by_one(chat_tokenizer):
    torch.manual_seed(0)
    config = GPTLiteConfig.from_preset("tiny", vocab_size=len(chat_tokenizer), max_position_embeddings=256,
                                       hidden_dropout_prob=0.0)
    model = GPTLiteForCausalLM(config).eval()
    with torch.no_grad():  # larger weights so greedy continuations differ between prompts
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(20)
    conversations = [record_to_messages(r) for r in RECORDS[:4]]  # prompts of different lengths
    batched = generate_responses(model, chat_tokenizer, conversations, max_new_tokens=6, batch_size=4,
                                 show_progress=False)
    single = [generate_responses(model, chat_tokenizer, [c], max_new_tokens=6, batch_size=1, show_progress=False)[0]
              for c in conversations]
    assert batched == single
    assert len(set(batched)) > 1  # the check is not vacuous: the replies differ
    assert chat_tokenizer.padding_side == "right"  # restored


def test_generation_stops_at_end_of_text(chat_tokenizer):
    model = wired_forty_two(chat_tokenizer, max_position_embeddings=512)
    replies = generate_responses(model, chat_tokenizer, [record_to_messages(r) for r in RECORDS[:3]],
                                 max_new_tokens=20, batch_size=2, show_progress=False)
    assert replies == ["42", "42", "42"]  # without the stop, 18 more tokens would follow


def test_rouge_l_values():
    out = rouge_l(["42", "42"], ["42", "The answer is 42"])
    # pair 2: LCS 1, precision 1, recall 1/4 -> F1 0.4
    assert out["rouge_l"] == pytest.approx((1.0 + 0.4) / 2)
    assert out["rouge_l_recall"] == pytest.approx((1.0 + 0.25) / 2)


def test_evaluate_writes_responses_and_metrics_and_reuses_them(forty_two_dir):
    folder, data = forty_two_dir
    (folder / "metrics.json").write_text(json.dumps({"eval_loss": 1.5}))  # as the training loop leaves it
    cfg = EvaluateInstructConfig(model_name_or_path=str(folder), data=str(data), max_new_tokens=10, batch_size=2)
    metrics = run_evaluate_instruct(cfg)
    assert metrics["rouge_l"] == pytest.approx(0.7) and metrics["num_evaluated"] == 2
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["eval_loss"] == 1.5 and saved["rouge_l"] == pytest.approx(0.7)
    rows = [json.loads(line) for line in (folder / "test_responses.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [RECORDS[17]["instruction"], RECORDS[18]["instruction"]]
    assert [r["model_response"] for r in rows] == ["42", "42"] and rows[1]["output"] == "The answer is 42"
    # a rerun reuses the responses: the file does not grow
    assert run_evaluate_instruct(cfg)["rouge_l"] == pytest.approx(0.7)
    assert len((folder / "test_responses.jsonl").read_text().splitlines()) == 2


def test_unreachable_judge_keeps_responses_and_rouge(forty_two_dir):
    folder, data = forty_two_dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    cfg = EvaluateInstructConfig(model_name_or_path=str(folder), data=str(data), max_new_tokens=10,
                                 judge=True, judge_url=url, judge_max_retries=0)
    with pytest.raises(JudgeUnreachableError) as err:
        run_evaluate_instruct(cfg)
    message = str(err.value)
    assert url in message and "test_responses.jsonl" in message
    assert len((folder / "test_responses.jsonl").read_text().splitlines()) == 2
    assert json.loads((folder / "metrics.json").read_text())["rouge_l"] == pytest.approx(0.7)


def test_chat_one_shot_and_interactive(forty_two_dir, capsys):
    folder, _ = forty_two_dir
    conversation = run_chat(ChatConfig(model_name_or_path=str(folder), message="Name a color.", input="sky"))
    assert conversation == [{"role": "user", "content": "Name a color."}, {"role": "user", "content": "sky"},
                            {"role": "assistant", "content": "42"}]
    assert "42" in capsys.readouterr().out  # streamed by TextStreamer
    lines = iter(["/input cat", "Spell it.", "", "Again.", "/exit"])
    written = []
    history = run_chat(ChatConfig(model_name_or_path=str(folder), keep_history=True),
                       read=lambda prompt: next(lines), write=written.append)
    assert [m["role"] for m in history] == ["user", "user", "assistant", "user", "assistant"]
    assert history[1]["content"] == "cat" and history[-1]["content"] == "42"
    assert any("input set: 'cat'" in w for w in written)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model '.*nope' is neither an existing folder nor a valid Hub id"):
        run_evaluate_instruct(EvaluateInstructConfig(model_name_or_path=str(tmp_path / "nope")))
