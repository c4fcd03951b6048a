"""The one exception type that means "the user gave us something wrong".

The CLI turns a `UserError` into a single line on stderr and exit code 2, never a traceback.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in user input (config key, file, column, value). The message names it."""


EXIT_USER_ERROR = 2
