"""The configuration: every key with its default (defaults), what recipe files share (recipes: their
argument parser, runlocal, the one tiny config), and the checks a config passes before anything compiles
(validation).

defaults and recipes import nothing of genscl_jax; validation imports the layers whose allowed values it checks
(data, models, objectives, training, runtime), and only runner and main import it.
"""
