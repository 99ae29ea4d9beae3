"""``python -m hf_gptlite COMMAND [flags]``: see ``hf_gptlite.cli``."""

import sys

from .cli import main

sys.exit(main())
