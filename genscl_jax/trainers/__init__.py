"""The trainers: GenSCL pretraining (pretrain, with its compiled step in pretrain_step), supervised
cross-entropy (the CE baseline and teachers), linear evaluation, the kNN monitor, and the distillation teachers.
Each brings a state, a step and batches to the one loop in training.

It imports training, objectives, models, data, workdirs and runtime; only runner (and tools) import it. The
trainers do not import each other.
"""
