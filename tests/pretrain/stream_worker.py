"""The pretrain recipe, with the model's training forward recording its input blocks: one line of ids per batch in
``$GPTLITE_TEST_BLOCKS/blocks_rank{R}.jsonl``; with ``$GPTLITE_TEST_KILL_AT_FORWARD=N``, process 0 SIGKILLs itself
in its N-th training forward. tests/pretrain/test_streaming.py launches it under ``accelerate launch``."""

import json
import os
import signal
import sys
from pathlib import Path

from hf_gptlite.cli import run_command
from hf_gptlite.modeling_gptlite import GPTLiteForCausalLM

RANK = int(os.environ.get("RANK", "0"))
KILL_AT = int(os.environ.get("GPTLITE_TEST_KILL_AT_FORWARD", "0"))
_forward, _calls = GPTLiteForCausalLM.forward, [0]


def recording_forward(self, input_ids=None, *args, **kwargs):
    if self.training:
        _calls[0] += 1
        if RANK == 0 and _calls[0] == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(Path(os.environ["GPTLITE_TEST_BLOCKS"]) / f"blocks_rank{RANK}.jsonl", "a") as f:
            f.write(json.dumps(input_ids.tolist()) + "\n")
    return _forward(self, input_ids, *args, **kwargs)


GPTLiteForCausalLM.forward = recording_forward

if __name__ == "__main__":
    sys.exit(run_command("pretrain"))
