"""Greedy line wrapping."""


def wrap(text, width=70):
    """Split ``text`` into lines of at most ``width`` characters, breaking at spaces.

    Words longer than ``width`` are put on a line of their own.
    """
    if width <= 0:
        raise ValueError("width must be positive, got %r" % (width,))
    lines = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) < width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def fill(text, width=70):
    """Like :func:`wrap` but returns one string with newlines."""
    return "\n".join(wrap(text, width))
