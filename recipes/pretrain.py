"""Pretrain a GPTLite from scratch (tokenizer + packed text + the shared Accelerate loop).

    python recipes/pretrain.py                                              # the CPU default (embedded novels)
    python recipes/pretrain.py --config recipes/configs/pretrain_pt_tiny.yaml --max_steps 50
    accelerate launch --config_file recipes/configs/accelerate_ddp.yaml recipes/pretrain.py \
        --config recipes/configs/pretrain_gpt2_small_gpu.yaml
    python recipes/pretrain.py --resume_from_checkpoint latest              # continue a killed run

Every field of ``hf_gptlite.pretrain.config.PretrainConfig`` is a flag (``--help`` lists them).
"""

import sys

from hf_gptlite.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("pretrain"))
