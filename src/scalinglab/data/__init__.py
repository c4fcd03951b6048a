"""The corpus (any text, jsonl, parquet, arrow or save_to_disk source, compressed or not) and its
byte-level BPE tokenizer; the vendored paper tables lie in data/paper/."""
