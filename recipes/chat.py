"""Chat with an instruction-tuned GPTLite in the terminal; replies stream token by token (``TextStreamer``).

    python recipes/chat.py --model_name_or_path runs/instruct
    python recipes/chat.py --message "Name three primary colors."          # one answer, then exit
    python recipes/chat.py --message "Translate to French." --input "Good morning"

Prompts go through the model's chat template (the Alpaca layout). Every field of
``hf_gptlite.instruct.chat.ChatConfig`` is a flag (``--help``).
"""

import sys

from hf_gptlite.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("chat"))
