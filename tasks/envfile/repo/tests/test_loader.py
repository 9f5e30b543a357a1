from envfile import load, load_into, loads


def test_later_keys_see_earlier_ones():
    assert loads("A=1\nB=${A}2", environ={}) == {"A": "1", "B": "12"}


def test_environment_is_consulted():
    assert loads("B=$HOME/x", environ={"HOME": "/h"}) == {"B": "/h/x"}


def test_single_quoted_values_are_not_interpolated():
    assert loads("P='$HOME'", environ={"HOME": "/h"}) == {"P": "$HOME"}


def test_load_reads_utf8_files(tmp_path):
    path = tmp_path / ".env"
    path.write_text("GREETING=grüß dich\n", encoding="utf-8")
    assert load(str(path), environ={}) == {"GREETING": "grüß dich"}


def test_load_into_custom_environ(tmp_path):
    path = tmp_path / ".env"
    path.write_text("A=1\nB=2\n")
    env = {}
    assert load_into(str(path), environ=env) == ["A", "B"]
    assert env == {"A": "1", "B": "2"}


def test_existing_variables_win_by_default(tmp_path):
    path = tmp_path / ".env"
    path.write_text("A=from-file\nB=from-file\n")
    env = {"A": "from-env"}
    assert load_into(str(path), environ=env) == ["B"]
    assert env == {"A": "from-env", "B": "from-file"}
    assert load_into(str(path), environ=env, override=True) == ["A", "B"]
    assert env["A"] == "from-file"
