"""Writes swebench's harness tables as JSON for crates/forge-swe/src/specs.rs.

Run by scripts/extract-swebench-specs.sh inside a venv holding swebench==4.1.0; see that script
for why the version is pinned. Usage: python extract_swebench_specs.py OUT.json

Everything written is read from the installed package (no value is typed here), so re-running
against another swebench release shows its differences in `git diff data/swebench-specs.json`.
"""

import ast
import inspect
import json
import re
import sys

import swebench
from swebench.harness import constants as C
from swebench.harness import log_parsers
from swebench.harness.test_spec import javascript as test_spec_js
from swebench.harness.test_spec import python as test_spec_py
from swebench.harness.test_spec import utils as test_spec_utils


def parser_table_names():
    """repo -> the parser's name as MAP_REPO_TO_PARSER_* spells it.

    The tables bind aliases (`parse_log_astropy = parse_log_pytest_v2`), so a function's
    `__name__` is not the name the datasets' `log_parser` column carries: read the table's source.
    """
    names = {}
    for module in {inspect.getmodule(f) for f in log_parsers.MAP_REPO_TO_PARSER.values()}:
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Dict):
                continue
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if not any(t.startswith("MAP_REPO_TO_PARSER") for t in targets):
                continue
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Name):
                    names[key.value] = value.id
    return names


def heredoc_delimiter(function):
    """The fixed heredoc tag an eval-script builder uses (a local constant of the function)."""
    tags = [c for c in function.__code__.co_consts if isinstance(c, str) and re.fullmatch(r"EOF_\d+", c)]
    if len(tags) != 1:
        sys.exit(f"expected one EOF_<digits> constant in {function.__qualname__}, found {tags}")
    return tags[0]


def checked_json(value, where):
    """`value` if JSON can carry it unchanged; stops the script otherwise (nothing is dropped silently)."""
    try:
        if json.loads(json.dumps(value)) != value:
            raise TypeError("changes in a JSON round trip")
    except (TypeError, ValueError) as e:
        sys.exit(f"{where} is not JSON-serialisable ({e}); extend the script to convert it")
    return value


def main(out_path):
    parser_names = parser_table_names()
    repos = {}
    for repo, versions in sorted(C.MAP_REPO_VERSION_TO_SPECS.items()):
        for version in versions:
            if not isinstance(version, str):
                sys.exit(f"{repo}: version key {version!r} is not a string")
        parser = log_parsers.MAP_REPO_TO_PARSER.get(repo)
        repos[repo] = {
            "ext": C.MAP_REPO_TO_EXT[repo],
            "parser": parser_names.get(repo),
            "parser_function": parser.__name__ if parser else None,
            "install": checked_json(C.MAP_REPO_TO_INSTALL.get(repo), f"MAP_REPO_TO_INSTALL[{repo}]"),
            "versions": {
                v: checked_json(dict(s), f"MAP_REPO_VERSION_TO_SPECS[{repo}][{v}]")
                for v, s in sorted(versions.items())
            },
        }
    missing = sorted(r for r in log_parsers.MAP_REPO_TO_PARSER if r not in parser_names)
    if missing:
        sys.exit(f"no table name found for the parsers of {missing}")

    data = {
        "swebench_version": swebench.__version__,
        "generated_by": "scripts/extract-swebench-specs.sh",
        "non_test_exts": checked_json(C.NON_TEST_EXTS, "NON_TEST_EXTS"),
        "start_test_output": C.START_TEST_OUTPUT,
        "end_test_output": C.END_TEST_OUTPUT,
        "eval_heredoc_delimiter": heredoc_delimiter(test_spec_py.make_eval_script_list_py),
        "eval_heredoc_delimiter_common": heredoc_delimiter(test_spec_utils.make_eval_script_list_common),
        # Repositories whose test commands swebench computes in code from the test patch
        # (test_spec/javascript.py MAP_REPO_TO_TEST_CMDS) rather than taking them from the specs.
        "custom_test_cmd_repos": sorted(test_spec_js.MAP_REPO_TO_TEST_CMDS),
        "fail_only_repos": sorted(C.FAIL_ONLY_REPOS),
        "default_docker_specs": checked_json(C.DEFAULT_DOCKER_SPECS, "DEFAULT_DOCKER_SPECS"),
        "repo_base_commit_branch": checked_json(C.REPO_BASE_COMMIT_BRANCH, "REPO_BASE_COMMIT_BRANCH"),
        "repos": repos,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False, ensure_ascii=False)
        f.write("\n")
    print(f"{out_path}: swebench {swebench.__version__}, {len(repos)} repositories, "
          f"{sum(len(r['versions']) for r in repos.values())} repository versions", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
