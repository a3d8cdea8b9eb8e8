"""ERM: empirical risk minimisation (Vapnik 1998), the baseline every method is compared with.

The cross-entropy of every labelled sample through its domain's head (and the shared head's,
when the model has one), on one backbone pass over the whole batch: `TrainingMethod`'s default.
"""

from __future__ import annotations

from lightning_modules.methods.base import TrainingMethod


class ERM(TrainingMethod):
    """Empirical risk minimisation: no term beyond the classification loss; no options."""
