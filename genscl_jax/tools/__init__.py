"""Commands around the library, not part of it: the benchmark (bench, its command line; step_bench, the training
step; loss_bench, the loss alone; pipeline_bench, the step fed by the input pipeline; measure, timing, FLOPs and
memory plans), the machine and versions every result records (environment), the evidence study and its report
(study, study_report), the HLO collective audit (hlo_audit) and synthetic JPEGs for the pipeline (synthetic_photos).

Tools may import any layer; nothing in the library imports them (tests/test_layering.py).
"""
