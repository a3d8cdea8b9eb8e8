"""What the data checks and the layout checks report: one `Finding` per problem."""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: how bad (`error` stops training, `warning` does not), what kind, where.

    Args:
        severity: `error` or `warning`.
        kind: a short key such as `class-mismatch` or `zero-byte` (tests and filters use it).
        message: what is wrong, for a person.
        path: the file or folder (or `list_file:line`) it is about, when there is one.
    """

    severity: str
    kind: str
    message: str
    path: str | None = None

    def format(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.severity.upper()} [{self.kind}]{where} {self.message}"
