"""What is checked before training starts, so that it does not stop a run half-way.

`require_valid_inputs` reads what a run would otherwise find only when a batch loads (or pass
over): every list and label file whole, symlink loops in the class folders, and the splits. The
CLI runs it before the MLflow run exists; its findings are the rows `python -m
experiments.check_data` prints (`datamodules.data.checks`).
"""

from __future__ import annotations

from datamodules.data.checks import list_file_findings, symlink_loop_findings
from datamodules.data.findings import ERROR
from datamodules.data.image_io import BadImageError
from datamodules.data.problems import DataProblemsError, raise_if_errors


def require_valid_inputs(datamodule) -> None:
    """Before training (the CLI runs it before the MLflow run exists), what would otherwise
    fail only when its batch loads, or be passed over:

    - the splits, which reads the dataset's own lists (DTD's label files), each whole;
    - every list and label file, read whole as the data check reads it, missing files
      included (lines the dataset's own reader reported already are not repeated);
    - symlink loops among and inside the class folders (`symlink_loop_findings`).

    Everything found is raised at once (`DataProblemsError`), each at `file:line`: the rows
    `check_data` prints. Under `on_bad_image: skip` missing listed files and symlink loops are
    left to the run, which skips and counts them. A single looping image is reported as its
    load would report it (`BadImageError`). A DataModule streaming LitData shards reads no
    lists or folders.
    """
    if getattr(datamodule, "shards", None):
        return
    findings, headline = [], "the data has problems"
    try:
        datamodule.split_samples  # noqa: B018 (reads the dataset's own lists, all problems)
    except DataProblemsError as error:
        findings, headline = list(error.findings), error.headline
    reported = {(f.path, f.line) for f in findings if f.line is not None}
    listed = [f for f in list_file_findings(datamodule) if (f.path, f.line) not in reported]
    if not datamodule.images_in_memory:
        listed += symlink_loop_findings(datamodule.domains)
    if getattr(datamodule, "on_bad_image", "error") == "skip":
        listed = [f for f in listed if f.kind not in ("missing-file", "symlink-loop")]
    findings += listed
    errors = [f for f in findings if f.severity == ERROR]
    if len(errors) == 1 and errors[0].kind == "symlink-loop" and errors[0].message.endswith("link"):
        # As its batch would have reported it, only before training.
        raise BadImageError("symlink-loop", errors[0].path, errors[0].message)
    if listed:
        headline = "the data has problems"
    raise_if_errors(findings, headline=headline, source=datamodule)
