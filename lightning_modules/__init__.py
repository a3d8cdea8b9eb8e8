"""Models: recalibration modules, backbones, heads and the LightningModules."""
