"""The data library under the DataModules: samples and scanning, splits, the one image-list
parser, extra domains, the file index, the sample sources (file tree, LitData shards), the image
Dataset, decoding, transforms, samplers, loaders, style shift, checks.

Nothing here imports a DataModule, the demo generators (`datamodules/demo/`) or model code;
`datamodules/base.py` builds on it.
"""
