"""Sweeps over modules x seeds x domains x hyperparameters: the sweep file (`spec`), trials run
by Ray Tune (`trials`, `engine`), their MLflow runs (`runs`), DomainBed's model selection
(`selection`), statistics over seeds (`statistics`) and the report (`report`).
`python -m experiments.sweep run|status|collect SWEEP.yaml` is the command."""
