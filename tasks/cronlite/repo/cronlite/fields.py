"""Parsing of one cron field into the set of values it allows."""

from .errors import CronSyntaxError

MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN",
               "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


class FieldSpec:
    """Bounds and symbolic names of one of the five fields."""

    def __init__(self, name, low, high, names=None, aliases=None):
        self.name = name
        self.low = low
        self.high = high
        self.names = names or {}
        # values accepted on input and folded onto another (7 is also Sunday)
        self.aliases = aliases or {}

    def value(self, token):
        token = token.strip().upper()
        if token in self.names:
            return self.names[token]
        if not token.isdigit():
            raise CronSyntaxError("%r is not a number or a name" % token, self.name)
        number = int(token)
        number = self.aliases.get(number, number)
        if not self.low <= number <= self.high:
            raise CronSyntaxError(
                "%d is out of range %d-%d" % (number, self.low, self.high), self.name)
        return number


MINUTE = FieldSpec("minute", 0, 59)
HOUR = FieldSpec("hour", 0, 23)
DAY_OF_MONTH = FieldSpec("day-of-month", 1, 31)
MONTH = FieldSpec("month", 1, 12, {n: i + 1 for i, n in enumerate(MONTH_NAMES)})
DAY_OF_WEEK = FieldSpec("day-of-week", 0, 6, {n: i for i, n in enumerate(DAY_NAMES)}, {7: 0})

FIELDS = [MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]


def parse_field(text, spec):
    """Return the sorted list of values ``text`` allows, e.g. ``'1-10/3'`` -> [1, 4, 7, 10]."""
    if not text:
        raise CronSyntaxError("empty field", spec.name)
    values = set()
    for part in text.split(","):
        values.update(_parse_part(part, spec))
    return sorted(values)


def _parse_part(part, spec):
    step = 1
    if "/" in part:
        part, step_text = part.split("/", 1)
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronSyntaxError("bad step %r" % step_text, spec.name)
        step = int(step_text)
    if part == "*":
        low, high = spec.low, spec.high
    elif "-" in part:
        first, last = part.split("-", 1)
        low, high = spec.value(first), spec.value(last)
        if low > high:
            raise CronSyntaxError("range %s is backwards" % part, spec.name)
    else:
        low = spec.value(part)
        # 'N/step' means from N to the end of the field
        high = spec.high if step != 1 else low
    return range(low, high + 1, step)


def is_wildcard(text):
    """True when a field puts no restriction (``*`` or ``*/1``)."""
    return text in ("*", "*/1")
