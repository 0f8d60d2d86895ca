"""Commands around the library, not part of it: the step and loss benchmark (bench), the evidence study
and its report (study, study_report) and the HLO collective audit (hlo_audit).

Tools may import any layer; nothing in the library imports them (tests/test_layering.py).
"""
