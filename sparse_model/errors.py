"""The one exception type for mistakes a user can make.

The CLI turns a `UserError` into a single line on stderr and a non-zero exit; every other
exception is a bug and keeps its traceback. Library code raises `UserError` with a message that
says what is wrong and what to do about it.
"""


class UserError(Exception):
    """A problem the user can fix: bad path, bad option, corrupt file, locked database."""
