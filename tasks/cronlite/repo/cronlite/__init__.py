"""Five-field cron expressions: parsing, matching and next fire times."""

from .errors import CronSyntaxError
from .expression import CronExpression
from .schedule import iterate, next_after

__all__ = ["CronExpression", "CronSyntaxError", "iterate", "next_after"]
__version__ = "1.2.0"
