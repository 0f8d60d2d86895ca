"""`python -m genscl_jax.study`: the evidence study (genscl_jax/tools/study.py).

A short command name for README; the code lives in the tools/workdirs layer."""

from genscl_jax.tools import study

if __name__ == "__main__":
    study.main()
