"""ColoredMNIST: `python -m experiments.colored_mnist fit|validate|test|predict --config <yaml>`.

python -m experiments.colored_mnist fit --config configs/colored_mnist/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.colored_mnist fit --config configs/colored_mnist/demo.yaml
"""

from __future__ import annotations

from datamodules.mnist_variants import ColoredMNISTDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(ColoredMNISTDataModule)

if __name__ == "__main__":
    run_main(main)
