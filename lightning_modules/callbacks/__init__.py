"""Lightning callbacks the CLI and the configs add to the Trainer.

- `averaging`: weight averaging, combinable with any training method (`EMA`, `SWAD`; SWAD's
  loss valley in `loss_valley`).
- `artifacts`: evaluation figures and tables in MLflow (`EvaluationArtifacts`); `charts` draws them.
- `shape_bias`: shape bias on cue-conflict stimuli at test time (`ShapeBiasCallback`).
- `tracking`: run bookkeeping in MLflow (run id in checkpoints, bad images, the config).
- `frozen_batchnorm`: the backbone's BatchNorm layers frozen in training (`FreezeBatchNorm`,
  DomainBed's published setting).
- `contracts`: what the callbacks need from the model and the DataModule (Protocols).
"""
