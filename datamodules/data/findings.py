"""What the data checks and the layout checks report: one `Finding` per problem."""

from __future__ import annotations

import os
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"


def printable(text: str) -> str:
    """`text` with the undecodable bytes of file names (lone surrogates, PEP 383) shown as
    `\\xNN` escapes, so that a report can always be printed, written as UTF-8 or JSON."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Finding:
    """One problem: how bad (`error` stops training, `warning` does not), what kind, where.

    Args:
        severity: `error` or `warning`.
        kind: a short key such as `class-mismatch` or `zero-byte` (tests and filters use it).
        message: what is wrong, for a person.
        path: the file or folder it is about, when there is one.
        line: the line of `path` (a list file) it is about, when there is one.
    """

    severity: str
    kind: str
    message: str
    path: str | None = None
    line: int | None = None

    @property
    def where(self) -> str | None:
        """`path:line`, `path` or None."""
        if self.path is None:
            return None
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def format(self) -> str:
        """The one-line form: `ERROR [kind] path:line: message` (always printable)."""
        where = f" {self.where}:" if self.where else ""
        return printable(f"{self.severity.upper()} [{self.kind}]{where} {self.message}")

    def to_dict(self) -> dict:
        """The JSON form (`check_data --json`): every field, text made printable."""
        return {
            "severity": self.severity,
            "kind": self.kind,
            "path": None if self.path is None else printable(self.path),
            "line": self.line,
            "message": printable(self.message),
        }


def format_findings(findings: list[Finding]) -> str:
    """One line per finding, indented, for an exception message that lists every problem."""
    return "\n  ".join(finding.format() for finding in findings)
