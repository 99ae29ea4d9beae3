"""Data shared by several jobs: text corpora and their cleaning (``text``), corpora read in bounded chunks
(``corpus``), and the on-disk token cache built once and memory-mapped by every process (``token_cache``).
Each task's own data lives in its folder (``pretrain/data.py``, ``spam/data.py``, ``instruct/data.py``)."""
