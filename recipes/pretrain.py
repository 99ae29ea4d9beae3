"""Pretrain a GPTLite from scratch (tokenizer + packed text + the shared Accelerate loop).

    python recipes/pretrain.py                                              # the CPU default (embedded novels)
    python recipes/pretrain.py --config recipes/configs/pretrain_pt_tiny.yaml --max_steps 50
    accelerate launch --config_file recipes/configs/accelerate_ddp.yaml recipes/pretrain.py \
        --config recipes/configs/pretrain_gpt2_small_gpu.yaml
    python recipes/pretrain.py --resume_from_checkpoint latest              # continue a killed run

Every field of ``hf_gptlite.pretraining.PretrainConfig`` is a flag (``--help`` lists them).
"""

from hf_gptlite.pretraining import PretrainConfig, run_pretraining
from hf_gptlite.training import parse_config

if __name__ == "__main__":
    run_pretraining(parse_config(PretrainConfig))
