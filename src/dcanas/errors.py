"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (file, option, budget, device): the message says what, what is valid, and how to fix it."""


class DataError(UserError, RuntimeError):
    """The data is missing or malformed; the message says where to put it or how to get it."""
