"""The data library under the DataModules: samples and scanning, splits, the one image-list
parser, extra domains, the image Dataset, decoding, transforms, samplers, style shift, checks.

Nothing here imports a DataModule or model code; `datamodules/base.py` builds on it.
"""
