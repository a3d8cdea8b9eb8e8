"""Lightning callbacks the CLI and the configs add to the Trainer.

- `artifacts`: evaluation figures and tables in MLflow (`EvaluationArtifacts`); `charts` draws them.
- `shape_bias`: shape bias on cue-conflict stimuli at test time (`ShapeBiasCallback`).
- `tracking`: run bookkeeping in MLflow (run id in checkpoints, bad images, the config).
- `frozen_batchnorm`: the backbone's BatchNorm layers frozen in training (`FreezeBatchNorm`,
  DomainBed's published setting).
- `contracts`: what the callbacks need from the model and the DataModule (Protocols).
"""
