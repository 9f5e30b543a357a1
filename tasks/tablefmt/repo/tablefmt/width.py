"""How many terminal columns a string takes."""

import unicodedata


def char_width(ch):
    """0 for combining marks and zero-width characters, 2 for wide East Asian ones, else 1."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 2
    return 1


def display_width(text):
    return sum(char_width(ch) for ch in text)


def pad(text, width, align="left"):
    """``text`` padded with spaces to ``width`` display columns."""
    fill = max(0, width - display_width(text))
    if align == "right":
        return " " * fill + text
    if align == "center":
        left = fill // 2
        return " " * left + text + " " * (fill - left)
    return text + " " * fill
