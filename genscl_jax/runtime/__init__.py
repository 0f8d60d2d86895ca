"""Where programs run: the device mesh and shardings (parallel), the XLA options they compile with
(compile_options), every path local or gs:// (paths), and preemption (SIGTERM -> one agreed stop step).

The bottom layer: it imports no other part of genscl_jax, and everything else may import it.
"""
