"""Alpaca records, the chat template and the masked collate (chapter 7 data path)."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from hf_gptlite import GPTLiteConfig, GPTLiteForCausalLM
from hf_gptlite.instruct.data import (
    ALPACA_CHAT_TEMPLATE,
    InstructionCollator,
    format_input,
    load_alpaca_records,
    prepare_examples,
    record_to_messages,
    set_chat_template,
    split_records,
    tokenize_records,
)

X = -100
EXAMPLES = [  # prompt + response ids (no end-of-text yet), and how many of them are prompt
    {"input_ids": [10, 11, 12], "prompt_length": 2},
    {"input_ids": [20, 21, 22, 23, 24], "prompt_length": 3},
    {"input_ids": [30], "prompt_length": 1},
]


@pytest.fixture
def chat_tokenizer(byte_tokenizer):
    return set_chat_template(copy.deepcopy(byte_tokenizer))  # the session fixture stays template-free


def test_collate_pads_appends_eos_and_masks_padding():
    batch = InstructionCollator(pad_token_id=2, eos_token_id=1)(EXAMPLES)
    assert batch["input_ids"].tolist() == [
        [10, 11, 12, 1, 2, 2],
        [20, 21, 22, 23, 24, 1],
        [30, 1, 2, 2, 2, 2],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6, [1, 1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [
        [10, 11, 12, 1, X, X],
        [20, 21, 22, 23, 24, 1],
        [30, 1, X, X, X, X],
    ]
    # the book's targets (input shifted by one) are labels[:, 1:]: the end-of-text is a target, padding is not
    assert batch["labels"][:, 1:].tolist() == [
        [11, 12, 1, X, X],
        [21, 22, 23, 24, 1],
        [1, X, X, X, X],
    ]


def test_collate_mask_prompt_keeps_only_response_and_eos():
    batch = InstructionCollator(pad_token_id=2, eos_token_id=1, mask_prompt=True)(EXAMPLES)
    assert batch["labels"].tolist() == [
        [X, X, 12, 1, X, X],
        [X, X, X, 23, 24, 1],
        [X, 1, X, X, X, X],
    ]
    assert batch["input_ids"].tolist()[1] == [20, 21, 22, 23, 24, 1]  # inputs unchanged


def test_collate_max_length_truncates():
    batch = InstructionCollator(pad_token_id=2, eos_token_id=1, max_length=4)(EXAMPLES)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 1], [20, 21, 22, 23], [30, 1, 2, 2]]
    assert batch["labels"].tolist() == [[10, 11, 12, 1], [20, 21, 22, 23], [30, 1, X, X]]


def test_collate_pad_equal_to_eos_keeps_first_eos():
    """GPT-2's tokenizer pads with <|endoftext|>: only the first one is a target."""
    batch = InstructionCollator(pad_token_id=50256, eos_token_id=50256)(EXAMPLES[:1] + EXAMPLES[2:])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 50256], [30, 50256, 50256, 50256]]
    assert batch["labels"].tolist() == [[10, 11, 12, 50256], [30, 50256, X, X]]


def test_collate_labels_give_the_book_loss():
    """The model's loss on the collate's labels is the cross entropy of logits[:, :-1] against the book's
    hand-written targets (input shifted by one, -100 ignored)."""
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(GPTLiteConfig.from_preset("tiny", hidden_dropout_prob=0.0)).eval()
    batch = InstructionCollator(pad_token_id=2, eos_token_id=1, mask_prompt=True)(EXAMPLES)
    out = model(**batch)
    targets = torch.tensor([[X, 12, 1, X, X], [X, X, 23, 24, 1], [1, X, X, X, X]])
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.size(-1)), targets.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_shipped_records_and_book_split():
    records = load_alpaca_records()
    assert len(records) == 1100 and set(records[0]) == {"instruction", "input", "output"}
    split = split_records(records)
    assert [len(split[k]) for k in ("train", "test", "validation")] == [935, 110, 55]
    assert split["train"][0] == records[0] and split["test"][0] == records[935] and split["validation"][-1] == records[-1]


def test_local_json_jsonl_and_missing_field_errors(tmp_path):
    good = [{"instruction": "Say hi.", "input": "", "output": "Hi."}, {"instruction": "Add.", "output": "2"}]
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in good) + "\n")
    for name in ("a.json", "a.jsonl"):
        records = load_alpaca_records(tmp_path / name)
        assert records[1] == {"instruction": "Add.", "input": "", "output": "2"}  # absent input = no input
    (tmp_path / "bad.jsonl").write_text(json.dumps(good[0]) + "\n" + json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: record 1 is missing 'output'"):
        load_alpaca_records(tmp_path / "bad.jsonl")
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": 3, "output": "y"}]))
    with pytest.raises(ValueError, match="record 0 field 'instruction' must be a string"):
        load_alpaca_records(tmp_path / "b.json")
    (tmp_path / "c.jsonl").write_text("{not json}\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        load_alpaca_records(tmp_path / "c.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_alpaca_records(tmp_path / "nope.json")


def test_chat_template_renders_the_alpaca_layout(chat_tokenizer):
    with_input = {"instruction": "Rewrite in passive voice.", "input": "The cat ate the fish.", "output": "The fish was eaten."}
    no_input = {"instruction": "Name a color.", "input": "", "output": "Blue."}
    prompt = chat_tokenizer.apply_chat_template(record_to_messages(with_input), tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nRewrite in passive voice.\n\n### Input:\nThe cat ate the fish.\n\n### Response:\n"
    )
    assert prompt == format_input(with_input) + "\n\n### Response:\n"
    full = chat_tokenizer.apply_chat_template(record_to_messages(no_input, with_response=True), tokenize=False)
    assert full == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nName a color.\n\n### Response:\nBlue.[EOS]"
    )
    # a system message replaces the preamble; content given as OpenAI text parts works too
    sys_prompt = chat_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        tokenize=False, add_generation_prompt=True)
    assert sys_prompt == "Be brief.\n\n### Instruction:\nHi\n\n### Response:\n"
    # without add_generation_prompt no response header is added
    assert not chat_tokenizer.apply_chat_template(record_to_messages(no_input), tokenize=False).endswith("### Response:\n")
    # every shipped record renders exactly as the book's format_input + response header
    for r in load_alpaca_records():
        rendered = chat_tokenizer.apply_chat_template(record_to_messages(r), tokenize=False, add_generation_prompt=True)
        assert rendered == format_input(r) + "\n\n### Response:\n"


TWO_TURNS = [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue."},
             {"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Pear."}]


def test_two_turn_chat_tokenizes_each_end_of_turn_as_the_eos_id(chat_tokenizer, tmp_path):
    eos = chat_tokenizer.eos_token_id
    ids = chat_tokenizer.apply_chat_template(TWO_TURNS, return_dict=False)
    assert ids.count(eos) == 2 and ids[-1] == eos
    first_turn = chat_tokenizer.apply_chat_template(TWO_TURNS[:2], return_dict=False)
    assert ids[: len(first_turn)] == first_turn and first_turn[-1] == eos  # turn 1 ends with the id, not bytes
    assert chat_tokenizer.decode(ids).count("[EOS]") == 2
    # saved and reloaded (what `transformers serve` and chat --keep_history read) it stays a chat tokenizer
    from transformers import AutoTokenizer

    chat_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.apply_chat_template(TWO_TURNS, return_dict=False) == ids


def test_a_model_trained_on_two_turn_chats_stops_at_the_end_of_its_turn(chat_tokenizer):
    """SFT on the rendered template (TRL-style): the model learns the real EOS id at each turn's end, so greedy
    decoding of the second turn stops there."""
    tok = chat_tokenizer
    ids = torch.tensor([tok.apply_chat_template(TWO_TURNS, return_dict=False)])
    config = GPTLiteConfig.from_preset("tiny", vocab_size=len(tok), max_position_embeddings=512,
                                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = GPTLiteForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05
    model.eval()
    prompt = tok.apply_chat_template(TWO_TURNS[:3], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert new[-1] == tok.eos_token_id and len(new) < 20  # stopped at the end of its turn
    assert tok.decode(new, skip_special_tokens=True) == "Pear."


def test_chat_template_rejects_bad_conversations(chat_tokenizer):
    with pytest.raises(Exception, match="at most two consecutive user messages"):
        chat_tokenizer.apply_chat_template([{"role": "user", "content": "a"}] * 3, tokenize=False)
    with pytest.raises(Exception, match="unsupported role tool"):
        chat_tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}],
                                           tokenize=False)
    with pytest.raises(Exception, match="system message is only allowed first"):
        chat_tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
                                           tokenize=False)


def test_tokenize_records_splits_prompt_and_response(chat_tokenizer):
    records = [{"instruction": "Name a color.", "input": "", "output": "Blue."},
               {"instruction": "Spell it.", "input": "cat", "output": "c-a-t"}]
    examples = tokenize_records(records, chat_tokenizer)
    for rec, ex in zip(records, examples):
        ids, p = ex["input_ids"], ex["prompt_length"]
        assert chat_tokenizer.decode(ids[:p]) == format_input(rec) + "\n\n### Response:\n"
        assert chat_tokenizer.decode(ids[p:]) == rec["output"]
        # the prompt ids are exactly what apply_chat_template(tokenize=True) gives generation
        assert ids[:p] == chat_tokenizer.apply_chat_template(record_to_messages(rec), add_generation_prompt=True,
                                                             return_dict=False)
    short = prepare_examples(records, chat_tokenizer, max_length=examples[0]["prompt_length"], mask_prompt=True)
    assert len(short) == 0  # prompts alone reach max_length: no target left, dropped


def test_tokenize_requires_template(byte_tokenizer):
    tok = byte_tokenizer.__class__(tokenizer_object=byte_tokenizer.backend_tokenizer, eos_token="[EOS]")
    with pytest.raises(ValueError, match="no chat template"):
        tokenize_records([{"instruction": "a", "input": "", "output": "b"}], tok)
    assert "### Response" in ALPACA_CHAT_TEMPLATE
