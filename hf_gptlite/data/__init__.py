"""Data helpers: text corpora (``text``); task data sets live in their own modules."""
