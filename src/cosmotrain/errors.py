"""The one exception type for mistakes a user can make and fix."""


class UserError(ValueError):
    """Bad input: printed on every rank as one line naming the problem and the fix; exit 2."""
