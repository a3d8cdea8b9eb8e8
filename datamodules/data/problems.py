"""The one error for data problems found while scanning: every problem at once, not the first.

Scanning a dataset can find many problems (class folders that differ between domains, an empty
domain, list lines leaving their root, labels that name no class, ...). They are collected as
`Finding`s and raised together as one `DataProblemsError`, whose message lists them all, one
line each; the data check (`python -m experiments.check_data`) catches it and reports the same
findings as rows, beside what it finds by decoding and hashing the files.
"""

from __future__ import annotations

from collections.abc import Sequence

from datamodules.data.findings import ERROR, Finding, format_findings
from datamodules.data.layout import DatasetLayoutError, DomainData


class DataProblemsError(DatasetLayoutError):
    """Several data problems, each a `Finding`, raised together.

    Args:
        findings: every problem found (the errors among them are why this was raised).
        domains: the domains that could be scanned, for a data check that goes on reading them.
        headline: the first line of the message.
        source: the object whose scan failed (the DataModule): the CLI scans while it builds
            the DataModule (its link of `class_names` to the model), so a data check that
            catches this error would otherwise have no DataModule to go on checking.
    """

    def __init__(
        self,
        findings: Sequence[Finding],
        domains: Sequence[DomainData] = (),
        headline: str = "the data has problems",
        source: object | None = None,
    ) -> None:
        self.findings = list(findings)
        self.domains = list(domains)
        self.source = source
        errors = [f for f in self.findings if f.severity == ERROR]
        super().__init__(
            f"{headline} ({len(errors)} errors; `python -m experiments.check_data` "
            f"lists them with the rest of the data check):\n  {format_findings(errors)}"
        )

        self.headline = headline

    def __reduce__(self):
        # Pickled (DDP, DataLoader workers) without the source object.
        return type(self), (self.findings, self.domains, self.headline)


def raise_if_errors(
    findings: Sequence[Finding],
    domains: Sequence[DomainData] = (),
    headline: str = "the data has problems",
    source: object | None = None,
) -> None:
    """`DataProblemsError` with all `findings` if any of them is an error."""
    if any(f.severity == ERROR for f in findings):
        raise DataProblemsError(findings, domains, headline, source)


def find_problems_error(error: BaseException | None) -> DataProblemsError | None:
    """The `DataProblemsError` behind `error` (itself, or its cause or context, as wrapped by
    jsonargparse while it builds objects), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, DataProblemsError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
