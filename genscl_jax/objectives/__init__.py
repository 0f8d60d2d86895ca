"""The pure maths of GenSCL: the generalized loss (dense, and in blocks of anchors for large contrast
sets), Mixup/CutMix label mixing, and the MoCo EMA key encoder and key queue, as functions on arrays and pytrees.

It imports only jax and optax (and numpy): no configs, no models, no data, nothing else of genscl_jax.
"""
