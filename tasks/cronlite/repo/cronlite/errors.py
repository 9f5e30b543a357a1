"""Errors raised by cronlite."""


class CronSyntaxError(ValueError):
    """An expression or one of its fields cannot be parsed."""

    def __init__(self, message, field=None):
        if field is not None:
            message = "%s field: %s" % (field, message)
        super().__init__(message)
        self.field = field
