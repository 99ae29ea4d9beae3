"""Data shared by several jobs: text corpora and their cleaning (``text``: the tokenizer and pretraining read it).
Each task's own data lives in its folder (``pretrain/data.py``, ``spam/data.py``, ``instruct/data.py``)."""
