"""The configuration: every key with its default (defaults), what recipe files share (recipes: their
argument parser, runlocal, the one tiny config), whether a feature is on (features), a config's keys and their
errors (keys), the checks a config passes before anything compiles (validation) and which keys a rerun may change
(rerun).

defaults, recipes and features import nothing of genscl_jax (features not even ml_collections: the steps read it);
validation imports the layers whose allowed values it checks (data, models, objectives, training, runtime), and
only runner and main import it.
"""
