"""What a run leaves in its workdir, read back: the recorded config (run_config), the encoder's input contract
(input_contract: channels, size, mean and std), the one restore of a trained network (trained_network:
load_encoder, used by linear evaluation, teachers and export), the encoder it returns (encoder: features from
pixels), and export.

It imports training (checkpointing), models and runtime.
"""
