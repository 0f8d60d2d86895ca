"""What a run leaves in its workdir, read back: the recorded config (run_config), the one restore of a
trained network (trained_network: load_encoder, used by linear evaluation, teachers and export), and export.

It imports training (checkpointing), models and runtime.
"""
