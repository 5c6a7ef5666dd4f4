"""The base every config section shares: unknown keys are errors, so a typo never silently falls back
to a default; a field may be given by its alias (``lambda`` for ``lambda_``).

Its own module so that each section module (network, search, training, experimental, schema) builds on
it without importing the others.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config section: unknown keys are refused, aliases accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
