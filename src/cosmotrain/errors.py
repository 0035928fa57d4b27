"""The exception types for mistakes and conditions a user can fix."""


class UserError(ValueError):
    """Bad input: printed on every rank as one line naming the problem and the fix; exit 2."""


class StorageError(UserError):
    """A full disk, an exceeded quota, a read-only or forbidden folder, met while writing.

    Raised instead of the library's traceback, naming the file and the fix; whatever had been
    written completely before is left as it was (every write is a temporary file and a rename).
    """
