"""Fine-tune a pretrained GPTLite into an SMS spam classifier (the book's chapter 6) on the shared training loop.

    python recipes/finetune_spam.py --config recipes/configs/finetune_spam.yaml
    python recipes/finetune_spam.py --model_name_or_path runs/pretrain_pt --trainable all --num_epochs 3
    python recipes/finetune_spam.py --model_name_or_path openai-community/gpt2 --trainable lora   # GPT-2, converted
    accelerate launch --config_file recipes/configs/accelerate_ddp.yaml recipes/finetune_spam.py --config ...

Every field of ``hf_gptlite.spam.config.SpamConfig`` is a flag (``--help`` lists them). The run folder works with
``pipeline("text-classification", model=OUTPUT_DIR)``, ``gptlite-classify --model OUTPUT_DIR`` and
``GPTLITE_SPAM_MODEL=OUTPUT_DIR chainlit run recipes/spam_app.py``.
"""

import sys

from hf_gptlite.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("finetune_spam"))
