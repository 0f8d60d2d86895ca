"""`python -m genscl_jax.bench`: the step and loss benchmarks (genscl_jax/tools/bench.py).

A short command name for README; the code lives in the tools/workdirs layer."""

from genscl_jax.tools import bench

if __name__ == "__main__":
    bench.main()
