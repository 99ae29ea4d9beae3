"""For learners: the book's attention progression (not the model's own attention, which is in
``modeling_gptlite.py``; a test checks they compute the same thing)."""
