"""Instruction fine-tuning (the book's chapter 7): Alpaca records -> chat template -> masked collate -> the
shared Accelerate loop -> a model folder with the chat template.

    python recipes/finetune_instruct.py                                   # CPU default: the main job's model
    python recipes/finetune_instruct.py --config recipes/configs/finetune_instruct.yaml --max_steps 50
    python recipes/finetune_instruct.py --lora true --mask_prompt true --output_dir runs/instruct_lora
    python recipes/finetune_instruct.py --model_name_or_path openai-community/gpt2-medium --data tatsu-lab/alpaca

Every field of ``hf_gptlite.instruct.finetune.FinetuneInstructConfig`` is a flag (``--help`` lists them).
"""

import sys

from hf_gptlite.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("finetune_instruct"))
