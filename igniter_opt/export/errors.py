"""The one error type of the exporters (the CLI prints it as ``Error: ...`` and exits 1)."""

from igniter_opt.errors import IgniterOptError


class ExportError(IgniterOptError):
    """A plan cannot be exported as asked: a name, a GPU type, the output folder, a failed verification."""
