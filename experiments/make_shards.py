"""Write LitData shards: `python -m experiments.make_shards --config <yaml> --output D`.

Writes every split of the configuration's DataModule (every domain; labels and domain indices)
into LitData optimized chunks, each image re-encoded with its short side at most `--short-side`
(never enlarged), with LitData's progress bar; then train with the same configuration plus
`--data.init_args.shards DIR` (or the folder uploaded to an object store, `s3://bucket/DIR`):

    python -m experiments.make_shards --config configs/stylized_imagenet/sin.yaml \\
        --data.init_args.root /data/sin --output /data/sin-shards [--short-side 256] \\
        [--quality 90] [--workers N] [--encoding jpeg|png]

The splits are the configuration's (held-out and target domains, fractions and seed), so the
shards are read only by a configuration that makes the same splits. An interrupted run resumes
when started again with the same command; a finished output is never overwritten.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pytorch_lightning.cli import LightningArgumentParser

from datamodules.data.shard_writer import ENCODINGS, write_shards
from lightning_modules.cli import ParsedConfig


def add_shard_arguments(parser: LightningArgumentParser) -> None:
    """The shard writer's own options, beside the training CLI's."""
    parser.add_argument("--output", type=str, required=True, help="folder to write the shards to")
    parser.add_argument(
        "--short-side", type=int, default=256, help="resize so the short side is at most this"
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (1-100)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="encoding processes"
    )
    parser.add_argument(
        "--encoding", type=str, default="jpeg", choices=list(ENCODINGS), help="image encoding"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Write the DataModule of a training config as shards; return the exit status (2: bad
    input)."""
    try:
        parsed = ParsedConfig(
            args=argv,
            add_arguments=add_shard_arguments,
            prog="python -m experiments.make_shards",
            description=__doc__.splitlines()[0],
        )
        datamodule = parsed.instantiate_data()
    # Any failure to parse or build (layout, unknown domain, bad value) is the one line to show.
    except Exception as error:
        print(f"ERROR: cannot build the DataModule: {error}", file=sys.stderr)
        return 2
    options = parsed.config
    if datamodule.shards is not None:
        print(
            "ERROR: --data.init_args.shards is set; write shards from the source data (unset it)",
            file=sys.stderr,
        )
        return 2
    try:
        meta = write_shards(
            datamodule,
            options.output,
            short_side=options.short_side,
            quality=options.quality,
            workers=options.workers,
            encoding=options.encoding,
        )
    except (FileExistsError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {count}" for split, count in meta["splits"].items())
    print(f"wrote {options.output}: {counts}")
    print(f"train with: --data.init_args.shards {options.output}")
    return 0


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
