"""ExceptionInfo: a failure as task hooks receive it (Celery's ``einfo``, billiard's type).

A hook gets ``einfo.type``, ``einfo.exception``, ``einfo.tb`` (the traceback object, while
the process holds it) and ``einfo.traceback`` (the formatted text, which is what ``str()``
gives, so code that logged the old string form keeps working).
"""

from __future__ import annotations

import sys
import traceback as tb
from types import TracebackType


class ExceptionInfo:
    """The exception being handled (or the one given), with its type and traceback."""

    #: True when the error is caraway's own rather than the task's (Celery's flag)
    internal = False

    def __init__(
        self,
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None,
        internal: bool = False,
        *,
        traceback: str | None = None,
    ) -> None:
        if exc_info is None:
            found = sys.exc_info()
            if found[1] is None:
                raise ValueError("ExceptionInfo() outside an except block needs exc_info")
            assert found[0] is not None
            exc_info = (found[0], found[1], found[2])
        self.type, self.exception, self.tb = exc_info
        self.internal = internal
        if traceback is None:
            traceback = "".join(tb.format_exception(self.type, self.exception, self.tb))
        self.traceback = traceback

    @classmethod
    def from_exception(cls, exc: BaseException, traceback: str | None = None) -> ExceptionInfo:
        """The info of ``exc``; ``traceback`` is its text when formatted earlier."""
        return cls((type(exc), exc, exc.__traceback__), traceback=traceback)

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, TracebackType | None]:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"
