"""Looking inside trained models: what the recalibration modules do per domain and class.

`gates.py` records every block's gate through forward hooks (no change to the modules), with
running per-domain and per-class statistics; `gate_figures.py` draws them. The entry point is
`python -m experiments.analyze_gates`. Model side only: nothing here imports `datamodules/`.
"""
