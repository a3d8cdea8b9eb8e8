"""CIFAR-10/100: `python -m experiments.cifar fit|validate|test|predict --config <yaml>`.

python -m experiments.cifar fit --config configs/cifar10/resnet.yaml --data.init_args.root /data
python -m experiments.cifar fit --config configs/cifar10/demo.yaml
"""

from __future__ import annotations

from datamodules.cifar import CIFARDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(CIFARDataModule)

if __name__ == "__main__":
    run_main(main)
