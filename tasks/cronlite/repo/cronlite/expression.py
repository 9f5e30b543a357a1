"""The five-field expression."""

from .errors import CronSyntaxError
from .fields import DAY_OF_MONTH, DAY_OF_WEEK, FIELDS, is_wildcard, parse_field

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronExpression:
    """``minute hour day-of-month month day-of-week``, or one of the ``@`` aliases."""

    def __init__(self, text):
        self.text = text
        expanded = ALIASES.get(text.strip().lower(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise CronSyntaxError("expected 5 fields, got %d in %r" % (len(parts), text))
        self.minutes, self.hours, self.days, self.months, self.weekdays = (
            parse_field(part, spec) for part, spec in zip(parts, FIELDS))
        self._days_restricted = not is_wildcard(parts[2])
        self._weekdays_restricted = not is_wildcard(parts[4])

    def __repr__(self):
        return "CronExpression(%r)" % self.text

    def matches_day(self, when):
        """Whether the expression fires on the date of ``when``.

        As in Vixie cron, when both day fields are restricted a day matches if EITHER does.
        """
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self._days_restricted and self._weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def matches(self, when):
        """Whether the expression fires at the minute of ``when`` (seconds are ignored)."""
        return (when.minute in self.minutes and when.hour in self.hours
                and when.month in self.months and self.matches_day(when))
