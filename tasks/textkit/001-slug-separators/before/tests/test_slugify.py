from textkit import slugify


def test_simple_words():
    assert slugify("Hello World") == "hello-world"


def test_accents_are_removed():
    assert slugify("Crème brûlée") == "creme-brulee"


def test_leading_and_trailing_separators_removed():
    assert slugify("  hello ") == "hello"


def test_max_length_cuts_at_word_boundary():
    assert slugify("the quick brown fox", max_length=12) == "the-quick"
