//! Golden tests of the seven log parsers (log excerpts in the formats the official harness sees)
//! and of the grading semantics, v4 (swebench 4.1.0) versus v5. No Docker needed.

use std::collections::BTreeMap;

use forge_swe::grading::{self, logs_eval, test_region, tests_report, GradingVersion};
use forge_swe::{LogParser, TaskInstance};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const PYTEST_LOG: &str = "\
============================= test session starts ==============================
platform linux -- Python 3.11.2, pytest-7.2.1, pluggy-1.0.0
rootdir: /testbed
collected 7 items

tests/test_a.py ..F.sxE                                                  [100%]

==================================== ERRORS ====================================
_____________________ ERROR at setup of test_fixture ___________________________
E       RuntimeError: boom
=================================== FAILURES ===================================
__________________________________ test_three __________________________________
    def test_three():
>       assert 1 == 2
E       assert 1 == 2
tests/test_a.py:12: AssertionError
==================================== PASSES ====================================
=========================== short test summary info ============================
PASSED tests/test_a.py::test_one
PASSED tests/test_a.py::test_param[1-2]
PASSED tests/test_a.py::test_four
FAILED tests/test_a.py::test_three - assert 1 == 2
SKIPPED [1] tests/test_a.py:20: needs network
XFAIL tests/test_a.py::test_xf - reason: known bug
ERROR tests/test_a.py::test_fixture - RuntimeError: boom
============== 1 failed, 3 passed, 1 skipped, 1 xfailed, 1 error in 0.12s ======
";

#[test]
fn pytest_parser_golden() {
    let got = LogParser::Pytest.parse(PYTEST_LOG);
    let want = map(&[
        ("tests/test_a.py::test_one", "PASSED"),
        ("tests/test_a.py::test_param[1-2]", "PASSED"),
        ("tests/test_a.py::test_four", "PASSED"),
        ("tests/test_a.py::test_three", "FAILED"),
        // 4.1.0 quirk kept on purpose: a skip summary line yields the key "[1]".
        ("[1]", "SKIPPED"),
        ("tests/test_a.py::test_xf", "XFAIL"),
        ("tests/test_a.py::test_fixture", "ERROR"),
    ]);
    assert_eq!(got, want);
    // the -rA summary of a per-test SKIPPED line (pytest -rA with verbose skip ids)
    let got = LogParser::Pytest.parse("SKIPPED tests/t.py::test_s\nPASSED\nrandom text PASSED x\n");
    assert_eq!(got, map(&[("tests/t.py::test_s", "SKIPPED")]));
}

#[test]
fn pytest_options_parser_golden() {
    let log = "\
PASSED tests/test_pylint.py::test_file[/testbed/tests/functional/a/abstract.py]
FAILED tests/test_pylint.py::test_file[/testbed/tests/functional/b/bad.py] - AssertionError
PASSED tests/test_requests.py::test_url[http://example.com/a/b]
PASSED tests/test_glob.py::test_glob[/tmp/*/x.py]
PASSED tests/test_plain.py::test_plain
";
    let got = LogParser::PytestOptions.parse(log);
    let want = map(&[
        ("tests/test_pylint.py::test_file[/abstract.py]", "PASSED"),
        ("tests/test_pylint.py::test_file[/bad.py]", "FAILED"),
        (
            "tests/test_requests.py::test_url[http://example.com/a/b]",
            "PASSED",
        ),
        ("tests/test_glob.py::test_glob[/tmp/*/x.py]", "PASSED"),
        ("tests/test_plain.py::test_plain", "PASSED"),
    ]);
    assert_eq!(got, want);
    // The same log through the plain pytest parser keeps the full paths.
    assert!(LogParser::Pytest
        .parse(log)
        .contains_key("tests/test_pylint.py::test_file[/testbed/tests/functional/a/abstract.py]"));
}

#[test]
fn pytest_v2_parser_golden() {
    let log = "\
\u{1b}[32mPASSED\u{1b}[0m astropy/units/tests/test_quantity.py::test_copy
\u{1b}[31mFAILED\u{1b}[0m astropy/units/tests/test_quantity.py::test_repr - AssertionError: x
\u{1b}[33mSKIPPED\u{1b}[0m astropy/units/tests/test_quantity.py::test_skip
sklearn/tests/test_base.py::test_clone PASSED
sklearn/tests/test_base.py::test_clone_2 FAILED
";
    let got = LogParser::PytestV2.parse(log);
    let want = map(&[
        ("astropy/units/tests/test_quantity.py::test_copy", "PASSED"),
        ("astropy/units/tests/test_quantity.py::test_repr", "FAILED"),
        ("astropy/units/tests/test_quantity.py::test_skip", "SKIPPED"),
        ("sklearn/tests/test_base.py::test_clone", "PASSED"),
        ("sklearn/tests/test_base.py::test_clone_2", "FAILED"),
    ]);
    assert_eq!(got, want);
    // The plain parser does not understand colours or trailing statuses.
    assert!(LogParser::Pytest.parse(log).is_empty());
}

#[test]
fn django_parser_golden() {
    let log = "\
Testing against Django installed in '/testbed/django'
Importing application inspectdb
test_attribute_name_not_python_keyword (inspectdb.tests.InspectDBTestCase) ... ok
test_custom_fields (inspectdb.tests.InspectDBTestCase) ... FAIL
test_digits_column_name_introspection (inspectdb.tests.InspectDBTestCase) ... ERROR
test_foreign_key_to_field (inspectdb.tests.InspectDBTestCase) ... skipped 'Database has no feature'
test_table_names (inspectdb.tests.InspectDBTestCase) ... Testing against Django installed in '/testbed/django'
Importing application inspectdb
System check identified no issues (0 silenced).
ok
test_managed (inspectdb.tests.InspectDBTestCase)
Introspection of a managed model ... ok
test_unique (inspectdb.tests.InspectDBTestCase) ...  OK

======================================================================
FAIL: test_custom_fields (inspectdb.tests.InspectDBTestCase)
----------------------------------------------------------------------
Traceback (most recent call last):
AssertionError: 'text' not found
----------------------------------------------------------------------
Ran 7 tests in 0.112s

FAILED (failures=1, errors=1, skipped=1)
";
    let got = LogParser::Django.parse(log);
    let want = map(&[
        (
            "test_attribute_name_not_python_keyword (inspectdb.tests.InspectDBTestCase)",
            "PASSED",
        ),
        (
            "test_custom_fields (inspectdb.tests.InspectDBTestCase)",
            "FAILED",
        ),
        // `FAIL: name (class)` adds the bare name too (official behaviour).
        ("test_custom_fields", "FAILED"),
        (
            "test_digits_column_name_introspection (inspectdb.tests.InspectDBTestCase)",
            "ERROR",
        ),
        (
            "test_foreign_key_to_field (inspectdb.tests.InspectDBTestCase)",
            "SKIPPED",
        ),
        (
            "test_table_names (inspectdb.tests.InspectDBTestCase)",
            "PASSED",
        ),
        ("Introspection of a managed model", "PASSED"),
        ("test_unique (inspectdb.tests.InspectDBTestCase)", "PASSED"),
    ]);
    assert_eq!(got, want);
}

#[test]
fn sympy_parser_golden() {
    let log = "\
============================= test process starts ==============================
executable:         /usr/bin/python3  (3.9.19-final-0) [CPython]
sympy/core/tests/test_basic.py[4]
test_structure ok
test_equality ok
test_subs F
test_atoms E
________________________________________________________________________________
___________ sympy/core/tests/test_basic.py:test_subs ___________________________
Traceback (most recent call last):
  File \"/testbed/sympy/core/tests/test_basic.py\", line 10, in test_subs
AssertionError
============= tests finished: 2 passed, 1 failed, 1 exceptions in 0.5 seconds ==
";
    let got = LogParser::Sympy.parse(log);
    let want = map(&[
        ("test_structure", "PASSED"),
        ("test_equality", "PASSED"),
        ("test_subs", "FAILED"),
        ("test_atoms", "ERROR"),
        ("sympy/core/tests/test_basic.py:test_subs", "FAILED"),
    ]);
    assert_eq!(got, want);
}

#[test]
fn matplotlib_parser_golden() {
    let log = "\
PASSED lib/matplotlib/tests/test_backend_bases.py::test_interactive_zoom[MouseButton.LEFT]
PASSED lib/matplotlib/tests/test_backend_bases.py::test_interactive_pan[MouseButton.RIGHT-None]
FAILED lib/matplotlib/tests/test_axes.py::test_hist[png] - ImageComparisonFailure: images not close
SKIPPED lib/matplotlib/tests/test_axes.py::test_pdf[pdf]
";
    let got = LogParser::Matplotlib.parse(log);
    let want = map(&[
        (
            "lib/matplotlib/tests/test_backend_bases.py::test_interactive_zoom[1]",
            "PASSED",
        ),
        (
            "lib/matplotlib/tests/test_backend_bases.py::test_interactive_pan[3-None]",
            "PASSED",
        ),
        (
            "lib/matplotlib/tests/test_axes.py::test_hist[png]",
            "FAILED",
        ),
        (
            "lib/matplotlib/tests/test_axes.py::test_pdf[pdf]",
            "SKIPPED",
        ),
    ]);
    assert_eq!(got, want);
}

#[test]
fn seaborn_parser_golden() {
    let log = "\
tests/test_core.py::TestSemanticMapping::test_call_lookup PASSED [  5%]
tests/test_core.py::TestHueMapping::test_init_from_map FAILED [ 10%]
tests/test_core.py::TestHueMapping::test_skip SKIPPED [ 15%]
PASSED tests/test_core.py::TestSizeMapping::test_map
FAILED tests/test_core.py::TestHueMapping::test_init_from_map - AssertionError
";
    let got = LogParser::Seaborn.parse(log);
    let want = map(&[
        (
            "tests/test_core.py::TestSemanticMapping::test_call_lookup",
            "PASSED",
        ),
        ("tests/test_core.py::TestSizeMapping::test_map", "PASSED"),
        (
            "tests/test_core.py::TestHueMapping::test_init_from_map",
            "FAILED",
        ),
    ]);
    assert_eq!(got, want);
}

#[test]
fn parser_selection_by_field_then_repo() {
    use LogParser::*;
    assert_eq!(LogParser::for_instance(Some("django"), "x/y"), Django);
    assert_eq!(
        LogParser::for_instance(Some("pytest_v2"), "django/django"),
        PytestV2
    );
    assert_eq!(LogParser::for_instance(None, "sympy/sympy"), Sympy);
    assert_eq!(
        LogParser::for_instance(None, "scikit-learn/scikit-learn"),
        PytestV2
    );
    assert_eq!(LogParser::for_instance(None, "psf/requests"), PytestOptions);
    assert_eq!(LogParser::for_instance(None, "mwaskom/seaborn"), Seaborn);
    assert_eq!(
        LogParser::for_instance(None, "matplotlib/matplotlib"),
        Matplotlib
    );
    assert_eq!(
        LogParser::for_instance(Some("nonsense"), "pallets/flask"),
        Pytest
    );
    assert_eq!(LogParser::for_instance(None, "unknown/repo"), Pytest);
    for name in [
        "pytest",
        "pytest-with-options",
        "pytest_v2",
        "django",
        "sympy",
        "matplotlib",
        "seaborn",
    ] {
        assert!(LogParser::from_name(name).is_some(), "{name}");
    }
}

fn wrap(region: &str, exit: Option<i64>) -> String {
    let mut s = format!(
        "+ git apply\n{}\n{region}\n{}\n",
        grading::START_TEST_OUTPUT,
        grading::END_TEST_OUTPUT
    );
    if let Some(c) = exit {
        s.push_str(&format!("{} {c}\n", grading::TEST_EXIT_CODE));
    }
    s
}

fn inst(f2p: &[&str], p2p: &[&str]) -> TaskInstance {
    serde_json::from_value(serde_json::json!({
        "repo": "forge/x", "instance_id": "forge__x-1", "base_commit": "abc",
        "FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p, "log_parser": "pytest"
    }))
    .unwrap()
}

#[test]
fn region_markers_and_bad_codes() {
    let log = wrap("PASSED t::a", Some(0));
    assert_eq!(test_region(&log).unwrap().trim(), "PASSED t::a");
    for bad in [
        grading::APPLY_PATCH_FAIL,
        grading::RESET_FAILED,
        grading::TESTS_ERROR,
        grading::TESTS_TIMEOUT,
    ] {
        let l = format!("{log}{bad}\n");
        assert!(test_region(&l).is_none(), "{bad}");
        let (_, found) = logs_eval(&l, LogParser::Pytest, GradingVersion::V4);
        assert!(!found);
    }
    assert!(test_region("no markers at all").is_none());
    assert!(test_region(&format!("{}\nPASSED t::a\n", grading::START_TEST_OUTPUT)).is_none());
    // Official split semantics: a second start marker ends the region; text after the end
    // marker is never graded.
    let log = format!(
        "{s}\nFAILED t::a\n{s}\nPASSED t::a\n{e}\nPASSED t::b\n",
        s = grading::START_TEST_OUTPUT,
        e = grading::END_TEST_OUTPUT
    );
    let (m, found) = logs_eval(&log, LogParser::Pytest, GradingVersion::V4);
    assert!(found);
    assert_eq!(m, map(&[("t::a", "FAILED")]));
}

#[test]
fn v4_semantics() {
    let sm = map(&[
        ("a", "PASSED"),
        ("b", "XFAIL"),
        ("c", "SKIPPED"),
        ("d", "FAILED"),
        ("e", "ERROR"),
    ]);
    let v4 = GradingVersion::V4;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let r = tests_report(
        &sm,
        &s(&["a", "b", "c", "d", "e", "missing"]),
        &[],
        false,
        v4,
    );
    assert_eq!(r.fail_to_pass.success, s(&["a", "b"]));
    // SKIPPED counts for neither side under 4.1.0
    assert_eq!(r.fail_to_pass.failure, s(&["d", "e", "missing"]));
    // resolved iff all F2P and P2P pass; skipped tests drop out
    let i = inst(&["t::a", "t::s"], &["t::p", "t::q"]);
    let log = wrap(
        "PASSED t::a\nSKIPPED t::s\nPASSED t::p\nSKIPPED t::q",
        Some(0),
    );
    let r = grading::grade(&i, Some("diff"), &log, v4);
    assert!(r.resolved && r.patch_successfully_applied && r.patch_exists && !r.patch_is_None);
    let log = wrap("PASSED t::a\nPASSED t::s\nFAILED t::p", Some(1));
    assert!(!grading::grade(&i, Some("diff"), &log, v4).resolved);
    let log = wrap("PASSED t::a\nPASSED t::s\nPASSED t::p", Some(0));
    assert!(
        !grading::grade(&i, Some("diff"), &log, v4).resolved,
        "absent P2P test fails"
    );
    let r = grading::grade(&i, None, &log, v4);
    assert!(r.patch_is_None && !r.patch_exists && !r.resolved);
    // fail-only evaluation: only an explicit FAILED fails
    let sm = map(&[("a", "ERROR")]);
    let r = tests_report(&sm, &s(&["a", "zz"]), &[], true, v4);
    assert_eq!(r.fail_to_pass.success, s(&["a", "zz"]));
}

#[test]
fn v4_versus_v5_differences() {
    let (v4, v5) = (GradingVersion::V4, GradingVersion::V5);
    // 1. SKIPPED: v4 drops it; v5 fails it in FAIL_TO_PASS and passes it in PASS_TO_PASS.
    let i = inst(&["t::a", "t::s"], &["t::p"]);
    let log = wrap("PASSED t::a\nSKIPPED t::s\nPASSED t::p", Some(0));
    assert!(grading::grade(&i, Some("d"), &log, v4).resolved);
    let r = grading::grade(&i, Some("d"), &log, v5);
    assert!(!r.resolved);
    assert_eq!(
        r.tests_status.unwrap().fail_to_pass.failure,
        vec!["t::s".to_string()]
    );
    let i2 = inst(&["t::a"], &["t::p", "t::s"]);
    let r = grading::grade(&i2, Some("d"), &log, v5);
    assert!(r.resolved);
    assert_eq!(r.tests_status.unwrap().pass_to_pass.success.len(), 2);
    let r = grading::grade(&i2, Some("d"), &log, v4);
    assert_eq!(
        r.tests_status.unwrap().pass_to_pass.success,
        vec!["t::p".to_string()]
    );
    // 2. Truncated parametrized ids (the log's id was cut at a space by split()).
    let i = inst(&["t.py::test_p[a b]"], &[]);
    let log = wrap("PASSED t.py::test_p[a b]", Some(0));
    assert!(!grading::grade(&i, Some("d"), &log, v4).resolved);
    assert!(grading::grade(&i, Some("d"), &log, v5).resolved);
    let log = wrap("FAILED t.py::test_p[a b] - boom", Some(1));
    assert!(!grading::grade(&i, Some("d"), &log, v5).resolved);
    // 3. Non-zero exit code without any failure in the log: "not found" under v5.
    let i = inst(&["t::a"], &["t::p"]);
    let log = wrap("PASSED t::a\nPASSED t::p", Some(1));
    assert!(grading::grade(&i, Some("d"), &log, v4).resolved);
    let r = grading::grade(&i, Some("d"), &log, v5);
    assert!(!r.resolved && !r.patch_successfully_applied);
    // the host's exit-code line is the LAST one; a forged earlier one does not count
    let forged = wrap(
        &format!("PASSED t::a\nPASSED t::p\n{} 0", grading::TEST_EXIT_CODE),
        Some(2),
    );
    assert!(!grading::grade(&i, Some("d"), &forged, v5).resolved);
    // same exit code with a real failure in the log: graded normally (unresolved)
    let log = wrap("FAILED t::a\nPASSED t::p", Some(1));
    let r = grading::grade(&i, Some("d"), &log, v5);
    assert!(r.patch_successfully_applied && !r.resolved);
    // 4. No evidence that the suite ran: "not found" under v5; v4 grades an empty map.
    let i = inst(&[], &[]);
    let log = wrap("ImportError: cannot import name 'x'", Some(0));
    assert!(
        grading::grade(&i, Some("d"), &log, v4).resolved,
        "4.1.0: empty lists resolve"
    );
    assert!(!grading::grade(&i, Some("d"), &log, v5).patch_successfully_applied);
}

#[test]
fn report_json_has_official_shape() {
    let i = inst(&["t::a"], &["t::p"]);
    let log = wrap("PASSED t::a\nPASSED t::p", Some(0));
    let r = grading::grade(&i, Some("d"), &log, GradingVersion::V4);
    let v = grading::report_json("forge__x-1", &r);
    let o = &v["forge__x-1"];
    for k in [
        "patch_is_None",
        "patch_exists",
        "patch_successfully_applied",
        "resolved",
    ] {
        assert!(o[k].is_boolean(), "{k}");
    }
    for k in [
        "FAIL_TO_PASS",
        "PASS_TO_PASS",
        "FAIL_TO_FAIL",
        "PASS_TO_FAIL",
    ] {
        assert!(o["tests_status"][k]["success"].is_array(), "{k}");
        assert!(o["tests_status"][k]["failure"].is_array(), "{k}");
    }
    assert_eq!(o["tests_status"]["FAIL_TO_PASS"]["success"][0], "t::a");
}
