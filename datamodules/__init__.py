"""DataModules: one multi-domain base (`base.py`) and one thin file per dataset, on top of two
libraries: `data/` (scanning, splits, image lists, the Dataset, transforms, style shift, checks)
and `demo/` (the generated demo datasets)."""
