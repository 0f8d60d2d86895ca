"""Recipes: one ml_collections config file per experiment, each with get_config(arg) -> ConfigDict.

A package, so recipes derive from each other by import (`from configs import cifar10_resnet50`).
`python -m genscl_jax.main --config DIR/NAME.py` puts DIR's parent on sys.path first, so that import works
from any working directory, for these recipes and for a user's own folder of configs alike.
"""
