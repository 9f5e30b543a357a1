"""Unicode helpers shared by the other modules."""

import unicodedata


def strip_accents(text):
    """Remove combining marks: 'Crème brûlée' -> 'Creme brulee'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))
