"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (file, option, budget, device): the message says what, what is valid, and how to fix it."""
