//! The official specifications (`forge_swe::specs`) against ground truth: data/swebench_verified.parquet
//! is SWE-bench Verified with swebench's own `eval_script`, `image` and `log_parser` columns, so
//! every instance stripped of them must get them back from the specifications.

use std::path::Path;

use forge_swe::specs::{self, sweb_eval_image, test_directives};
use forge_swe::{
    load_instances, official_eval_script, official_image, official_log_parser, LogParser,
    TaskInstance,
};

fn verified_instances() -> Vec<TaskInstance> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/swebench_verified.parquet");
    load_instances(&path).expect("data/swebench_verified.parquet loads")
}

/// `script` with its heredoc tags replaced by `tag`: the dataset's scripts were written with a
/// random `EOF_<hex>` tag per instance, swebench 4.1.0 uses a fixed one. Only tags that open a
/// heredoc (`<<'TAG'`) and the lines that close it are replaced, never patch text.
fn normalise_heredoc_tags(script: &str, tag: &str) -> String {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    for line in script.split('\n') {
        match &open {
            Some(t) if line == t => {
                out.push(tag.to_string());
                open = None;
            }
            Some(_) => out.push(line.to_string()),
            None => match line.split_once(" <<'") {
                Some((cmd, rest)) if rest.ends_with('\'') => {
                    open = Some(rest.trim_end_matches('\'').to_string());
                    out.push(format!("{cmd} <<'{tag}'"));
                }
                _ => out.push(line.to_string()),
            },
        }
    }
    out.join("\n")
}

/// The first differing line of two scripts, with a little context, diff-like.
fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.split('\n').collect(), got.split('\n').collect());
    let at = (0..w.len().max(g.len()))
        .find(|&i| w.get(i) != g.get(i))
        .unwrap_or(0);
    let mut msg = format!("first difference at line {}:\n", at + 1);
    for context in &w[at.saturating_sub(2)..at.min(w.len())] {
        msg.push_str(&format!("  {context}\n"));
    }
    msg.push_str(&format!(
        "- {}\n+ {}\n",
        w.get(at).unwrap_or(&"<end>"),
        g.get(at).unwrap_or(&"<end>")
    ));
    msg
}

#[test]
fn every_verified_instance_gets_its_official_eval_script_image_and_parser() {
    let instances = verified_instances();
    assert_eq!(instances.len(), 500);
    // The tag the specifications use, read off a generated script rather than assumed.
    let tag_of = |script: &str| {
        let start = script.find(" <<'").expect("a heredoc") + 4;
        script[start..start + script[start..].find('\'').unwrap()].to_string()
    };
    let mut mismatches = Vec::new();
    for inst in &instances {
        let mut stripped = inst.clone();
        let want_script = stripped
            .eval_script
            .take()
            .expect("the dataset has eval_script");
        let want_image = stripped.image.take().expect("the dataset has image");
        let want_parser = inst
            .log_parser
            .as_deref()
            .expect("the dataset has log_parser");
        stripped.log_parser = None;

        let id = &inst.instance_id;
        match official_eval_script(&stripped) {
            Ok(got) => {
                let want = normalise_heredoc_tags(&want_script, &tag_of(&got));
                if got != want {
                    mismatches.push(format!(
                        "{id}: eval script: {}",
                        first_difference(&want, &got)
                    ));
                }
            }
            Err(e) => mismatches.push(format!("{id}: eval script: {e}")),
        }
        let image = official_image(id);
        if image != want_image {
            mismatches.push(format!("{id}: image: want {want_image}, got {image}"));
        }
        match official_log_parser(&inst.repo) {
            Some(p) if p == want_parser => {
                assert!(
                    LogParser::from_name(p).is_some(),
                    "{id}: LogParser::from_name refuses {p}"
                );
            }
            got => mismatches.push(format!("{id}: log parser: want {want_parser}, got {got:?}")),
        }
    }
    let ok = instances.len() - {
        let mut ids: Vec<&str> = mismatches
            .iter()
            .map(|m| m.split(':').next().unwrap())
            .collect();
        ids.dedup();
        ids.len()
    };
    assert!(
        mismatches.is_empty(),
        "{ok}/{} instances match; the first mismatches:\n{}",
        instances.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A Verified instance of `repo` (the first), to vary in the unit tests below.
fn instance_of(repo: &str) -> TaskInstance {
    verified_instances()
        .into_iter()
        .find(|i| i.repo == repo)
        .expect("the repository is in Verified")
}

#[test]
fn unknown_repository_is_a_clear_error() {
    let mut inst = instance_of("django/django");
    inst.repo = "acme/widgets".into();
    let e = official_eval_script(&inst).unwrap_err().to_string();
    for part in [
        inst.instance_id.as_str(),
        "acme/widgets",
        "swebench 4.1.0",
        "`eval_script`",
        "`test_cmd`",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    assert!(!specs::known_repo("acme/widgets") && specs::known_versions("acme/widgets").is_empty());
    assert_eq!(official_log_parser("acme/widgets"), None);
}

#[test]
fn unknown_version_is_a_clear_error_listing_the_known_ones() {
    let mut inst = instance_of("django/django");
    inst.version = "99.0".into();
    let e = official_eval_script(&inst).unwrap_err().to_string();
    for part in [
        "django/django",
        "\"99.0\"",
        "swebench 4.1.0",
        "3.0, ",
        "`eval_script`",
        "`test_cmd`",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    assert!(specs::known_versions("django/django").contains(&"3.0"));
    assert_eq!(specs::swebench_version(), "4.1.0");
}

#[test]
fn repository_without_a_test_command_is_a_clear_error() {
    // swebench 4.1.0's dbt-core specifications have install steps but no test_cmd.
    let mut inst = instance_of("django/django");
    inst.repo = "dbt-labs/dbt-core".into();
    inst.version = specs::known_versions("dbt-labs/dbt-core")[0].into();
    let e = official_eval_script(&inst).unwrap_err().to_string();
    assert!(
        e.contains("no test command") && e.contains("`test_cmd`"),
        "{e}"
    );
}

fn with_test_patch(repo: &str, files: &[&str]) -> TaskInstance {
    let mut inst = instance_of(repo);
    inst.test_patch = files
        .iter()
        .map(|f| format!("diff --git a/{f} b/{f}\n--- a/{f}\n+++ b/{f}\n@@ -1 +1 @@\n-x\n+y\n"))
        .collect();
    inst
}

#[test]
fn django_directives_are_test_modules() {
    let inst = with_test_patch(
        "django/django",
        &[
            "tests/admin_views/tests.py",
            "tests/admin_views/fixtures/data.json",
            "django/test/utils.py",
        ],
    );
    assert_eq!(
        test_directives(&inst),
        ["admin_views.tests", "django.test.utils"]
    );
    let script = official_eval_script(&inst).unwrap();
    assert!(
        script.contains("\n./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 admin_views.tests django.test.utils\n"),
        "{script}"
    );
}

#[test]
fn sympy_directives_are_paths_for_bin_test() {
    let inst = with_test_patch(
        "sympy/sympy",
        &["sympy/core/tests/test_basic.py", "doc/notes.txt"],
    );
    assert_eq!(test_directives(&inst), ["sympy/core/tests/test_basic.py"]);
    let script = official_eval_script(&inst).unwrap();
    assert!(
        script.contains("bin/test -C --verbose sympy/core/tests/test_basic.py\n"),
        "{script}"
    );
}

#[test]
fn new_test_files_are_applied_but_not_reset() {
    let mut inst = with_test_patch("pytest-dev/pytest", &["testing/test_old.py"]);
    inst.test_patch.push_str("diff --git a/testing/test_new.py b/testing/test_new.py\nnew file mode 100644\n--- /dev/null\n+++ b/testing/test_new.py\n@@ -0,0 +1 @@\n+y\n");
    let script = official_eval_script(&inst).unwrap();
    // Reset before the apply and after the tests; a file the patch creates has no base version.
    let reset = format!("git checkout {} testing/test_old.py", inst.base_commit);
    let resets: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("git checkout "))
        .collect();
    assert_eq!(resets, [reset.as_str(), reset.as_str()], "{script}");
    assert!(
        script.contains(" testing/test_old.py testing/test_new.py\n"),
        "{script}"
    );
}

#[test]
fn swe_gym_and_official_image_names() {
    assert_eq!(
        sweb_eval_image("xingyaoww", "_s_", "getmoto__moto-7365"),
        "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-7365:latest"
    );
    assert_eq!(
        sweb_eval_image("xingyaoww", "_s_", "Project-MONAI__MONAI-5908"),
        "xingyaoww/sweb.eval.x86_64.project-monai_s_monai-5908:latest"
    );
    assert_eq!(
        official_image("django__django-11099"),
        "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    );
    assert_eq!(
        sweb_eval_image("", "__", "Foo__bar-1"),
        "sweb.eval.x86_64.foo__bar-1:latest"
    );
}

#[test]
fn other_languages_get_the_common_script() {
    let mut inst = with_test_patch("django/django", &["tests/foo_test.rs"]);
    inst.repo = "burntsushi/ripgrep".into();
    inst.version = specs::known_versions("burntsushi/ripgrep")[0].into();
    let script = official_eval_script(&inst).unwrap();
    assert!(
        script.starts_with("#!/bin/bash\nset -uxo pipefail\ncd /testbed\n"),
        "{script}"
    );
    assert!(
        script.contains("git apply --verbose --reject - <<'"),
        "{script}"
    );
    assert!(!script.contains("conda"), "{script}");
    assert_eq!(
        official_log_parser("burntsushi/ripgrep"),
        Some("parse_log_cargo")
    );

    inst.repo = "Automattic/wp-calypso".into();
    inst.version = specs::known_versions("Automattic/wp-calypso")[0].into();
    let e = official_eval_script(&inst).unwrap_err().to_string();
    assert!(e.contains("in code") && e.contains("`eval_script`"), "{e}");
}

#[test]
fn official_parser_names_agree_with_the_repository_table_of_parsers_rs() {
    // Two tables name the parser of a Python repository: swebench's (through the specifications)
    // and LogParser::for_repo. A repository where they disagree would be graded differently
    // depending on whether its record carries `log_parser`.
    let mut checked = 0;
    for inst in verified_instances() {
        let name = official_log_parser(&inst.repo).expect("every Verified repository has a parser");
        assert_eq!(
            LogParser::from_name(name),
            LogParser::for_repo(&inst.repo),
            "{}: {name}",
            inst.repo
        );
        checked += 1;
    }
    assert_eq!(checked, 500);
}
