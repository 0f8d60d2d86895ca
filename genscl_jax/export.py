"""`python -m genscl_jax.export`: a trained encoder written for use elsewhere (genscl_jax/workdirs/export.py).

A short command name for README; the code lives in the tools/workdirs layer."""

import sys

from genscl_jax.workdirs import export

if __name__ == "__main__":
    sys.exit(export.main())
