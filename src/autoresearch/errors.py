"""The one error type that the command line turns into a clear message and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, an invalid setting.

    ``hint`` says what to do about it; the CLI prints both and exits with status 2.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
