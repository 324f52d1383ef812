"""Errors that carry a message meant for the user.

A :class:`UserError` is a mistake the user can fix (a bad file, column, flag or recipe value); the CLI prints
its message as one line and exits with code 2. Anything else that escapes is a failure of ours (exit code 1).
"""


class UserError(Exception):
    """A mistake in the user's input, with one line that names it and says what to do."""

    exit_code = 2
