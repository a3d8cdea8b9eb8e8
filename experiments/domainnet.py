"""DomainNet: `python -m experiments.domainnet fit|validate|test|predict --config <yaml>`.

python -m experiments.domainnet fit --config configs/domainnet/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.domainnet fit --config configs/domainnet/demo.yaml
"""

from __future__ import annotations

from datamodules.domainnet import DomainNetDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(DomainNetDataModule)

if __name__ == "__main__":
    run_main(main)
