"""The networks: ResNet backbones, recalibration modules, classifier heads and DANN parts."""
