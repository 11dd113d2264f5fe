"""Which cell of a run a log line belongs to.

The scheduler sets the current cell (:func:`cell_context`) around each model's
extraction (model only), each signal computation (signals only) and the scoring
of each cell (model, signal and metric; the dataset when a run has several).
:class:`CellFilter`, installed on a console handler, prefixes every WARNING (and
above) raised inside a cell with it, e.g.
``[alexnet × lowgamma@150-350 × rsa] Smallest category has 4 stimuli...``, so a
warning in a long run says where it happened. Python warnings (numpy, scipy,
scikit-learn, torch ...) raised inside a cell are caught and logged once per
cell through the ``framework.warnings`` logger, with the same prefix, instead
of being printed by Python onto the progress bars.

API users who log to their own handlers get the prefix with::

    handler.addFilter(framework.log_context.CellFilter())

or ``%(cell)s`` in a format string (empty outside a cell).
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CellContext", "CellFilter", "cell_context", "current_cell", "attribute_warnings"]

#: Logger of the Python warnings caught inside a cell.
WARNINGS_LOGGER = "framework.warnings"


@dataclass(frozen=True)
class CellContext:
    """What the code running now works on; parts not concerned are None."""

    model: str | None = None
    signal: str | None = None
    metric: str | None = None
    dataset: str | None = None

    def parts(self) -> list[str]:
        """The model, signal and metric that are set, in that order."""
        return [p for p in (self.model, self.signal, self.metric) if p]

    def label(self) -> str:
        """``alexnet × lowgamma@150-350 × rsa``, led by ``demo: `` when the dataset is set."""
        text = " × ".join(self.parts())
        return f"{self.dataset}: {text}" if self.dataset else text

    def prefix(self) -> str:
        """``[alexnet × lowgamma@150-350 × rsa] ``; empty when nothing is set."""
        label = self.label()
        return f"[{label}] " if label else ""


_CURRENT: contextvars.ContextVar[CellContext | None] = contextvars.ContextVar("framework_cell", default=None)


def current_cell() -> CellContext | None:
    """The cell the calling code runs in (:func:`cell_context`), None outside any."""
    return _CURRENT.get()


@contextlib.contextmanager
def cell_context(model: str | None = None, signal: str | None = None, metric: str | None = None, *,
                 dataset: str | None = None, capture_warnings: bool = True) -> Iterator[CellContext]:
    """Run the body as the cell (``model``, ``signal``, ``metric``; ``dataset`` when a run has several).

    With ``capture_warnings`` the Python warnings raised in the body are logged once each, with the
    cell's prefix, when it ends (:func:`attribute_warnings`).
    """
    ctx = CellContext(model, signal, metric, dataset)
    token = _CURRENT.set(ctx)
    try:
        with attribute_warnings() if capture_warnings else contextlib.nullcontext():
            yield ctx
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def attribute_warnings(logger: logging.Logger | None = None) -> Iterator[None]:
    """Catch the Python warnings raised in the body and log each distinct one once when it ends.

    Filters already in place (``-W``, ``PYTHONWARNINGS``, a library's ``ignore``) still apply;
    warnings they let through are all caught (not only the first per code location), counted,
    and logged at WARNING on ``logger`` (default ``framework.warnings``) as
    ``RuntimeWarning: invalid value encountered in divide (numpy/lib/...py:123; 4 times)``.
    The current cell is read when they are logged, i.e. the one the body ran in.
    """
    logger = logger or logging.getLogger(WARNINGS_LOGGER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", append=True)  # after the existing filters: they keep priority
        try:
            yield
        finally:
            seen: dict[tuple[str, str], list] = {}
            for w in caught:
                key = (w.category.__name__, str(w.message))
                if key in seen:
                    seen[key][1] += 1
                else:
                    seen[key] = [w, 1]
            for (category, message), (w, count) in seen.items():
                times = f"; {count} times" if count > 1 else ""
                logger.warning("%s: %s (%s:%d%s)", category, message, _short_path(w.filename), w.lineno, times)


def _short_path(filename: str) -> str:
    """The last three parts of a source path (``numpy/lib/_function_base_impl.py``)."""
    parts = Path(filename).parts
    return "/".join(parts[-3:]) if parts else filename


class CellFilter(logging.Filter):
    """Prefixes WARNING-and-above records raised inside a cell with ``[model × signal × metric] ``.

    Every record gets a ``cell`` attribute (the label, empty outside a cell) for format strings.
    A record whose message already names every part of the cell (e.g. "metric 'rsa' failed on
    alexnet × lowgamma@150-350") is left as it is, and a record is prefixed once even when it
    passes several handlers carrying this filter.

    Parameters
    ----------
    level : int, default logging.WARNING
        Records at this level and above are prefixed.
    """

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _CURRENT.get()
        record.cell = ctx.label() if ctx is not None else ""
        if ctx is None or record.levelno < self.level or getattr(record, "_cell_prefixed", False):
            return True
        record._cell_prefixed = True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report, not ours
            return True
        if all(part in message for part in ctx.parts()) and (not ctx.dataset or ctx.dataset in message):
            return True
        prefix = ctx.prefix()
        record.msg = (prefix.replace("%", "%%") if record.args else prefix) + str(record.msg)
        return True
