"""The networks: ResNet and DenseNet backbones, recalibration modules, classifier heads."""
