"""Errors that carry a message meant for the user.

A :class:`UserError` is a mistake the user can fix (a bad file, column, flag or recipe value); the CLI prints
its message as one line and exits with code 2. Anything else that escapes is a failure of ours (exit code 1).
"""


class UserError(ValueError):
    """A mistake in the user's input, with one line that names it and says what to do.

    A ``ValueError``, so library callers (and scikit-learn's tooling) can catch bad input the usual way.
    """

    exit_code = 2
