"""URL slugs."""

import re

from ._unicode import strip_accents


def slugify(text, sep="-", max_length=None):
    """Turn ``text`` into a lowercase ASCII slug.

    Every run of characters that are not letters or digits becomes ONE separator, and
    separators at either end are removed.  ``max_length`` cuts the slug at a separator
    boundary when possible.
    """
    text = strip_accents(text).lower()
    slug = re.sub(r"[^a-z0-9]", sep, text).strip(sep)
    if max_length is not None and len(slug) > max_length:
        cut = slug[:max_length]
        if sep in cut and slug[max_length:max_length + len(sep)] != sep:
            cut = cut.rsplit(sep, 1)[0]
        slug = cut.strip(sep)
    return slug
