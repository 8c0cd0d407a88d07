"""Reading and writing model files (ours and MACE's), never executing pickled code."""
