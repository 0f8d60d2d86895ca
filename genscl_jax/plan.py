"""`python -m genscl_jax.plan`: a config's steps compiled for a TPU slice or NVIDIA GPUs, with no device
(genscl_jax/tools/plan.py).

A short command name for README; the code lives in the tools layer. The host only compiles: JAX is kept on the CPU
(set before JAX loads), so an installed TPU or CUDA plugin never tries to claim this machine."""

import os
import sys

if __name__ == "__main__":
    os.environ["JAX_PLATFORMS"] = "cpu"
    # Compiling needs no chip, so no lock on one: plans may run side by side (libtpu otherwise allows one process).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    for _name in ("TPU_STDERR_LOG_LEVEL", "TPU_MIN_LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL"):
        os.environ.setdefault(_name, "3")  # libtpu's notes about the hosts of a slice it is not running on

    from genscl_jax.tools import plan

    sys.exit(plan.main())
