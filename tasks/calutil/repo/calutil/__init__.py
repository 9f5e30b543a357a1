"""Calendar helpers."""

from .business import add_business_days, is_business_day
from .leap import days_in_month, days_in_year, is_leap
from .ranges import date_range

__all__ = [
    "add_business_days",
    "is_business_day",
    "days_in_month",
    "days_in_year",
    "is_leap",
    "date_range",
]
