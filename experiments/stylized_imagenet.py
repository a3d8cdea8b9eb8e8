"""Stylized-ImageNet (Geirhos et al., ICLR 2019): train on SIN, IN or SIN+IN, evaluate on both,
and measure shape bias on the cue-conflict stimuli at test time.

    python -m experiments.stylized_imagenet fit|validate|test --config <yaml>
"""

from __future__ import annotations

from datamodules.stylized_imagenet import StylizedImageNetDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(StylizedImageNetDataModule)

if __name__ == "__main__":
    run_main(main)
