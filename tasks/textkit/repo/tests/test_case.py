from textkit import camel_to_snake, snake_to_camel


def test_camel_to_snake_simple():
    assert camel_to_snake("fooBar") == "foo_bar"
    assert camel_to_snake("FooBarBaz") == "foo_bar_baz"


def test_snake_to_camel():
    assert snake_to_camel("foo_bar_baz") == "fooBarBaz"
    assert snake_to_camel("foo_bar", upper_first=True) == "FooBar"


def test_snake_to_camel_keeps_leading_underscores():
    assert snake_to_camel("_private_name") == "_privateName"


def test_camel_to_snake_keeps_acronyms_together():
    assert camel_to_snake("HTTPResponseCode") == "http_response_code"
    assert camel_to_snake("parseXMLFile") == "parse_xml_file"


def test_camel_to_snake_digits():
    assert camel_to_snake("utf8Encoder") == "utf8_encoder"
