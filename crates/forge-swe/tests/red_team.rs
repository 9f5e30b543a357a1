//! The red team: patches that try to get the reward without fixing anything, one or more per
//! class of hack, graded under the 4.1.0 (v4) and newer (v5) semantics on several bundled tasks
//! in real containers with real pytest. None may resolve, and each must say why. Controls: the
//! same hacks DO resolve with the hardening off (the red team is not toothless), and the gold
//! patches still resolve. The control over SWE-bench Verified's 500 gold patches needs no
//! Docker and lives in `tests/dataset.rs`.
//!
//! Under `CI=true` a missing engine or base image FAILS the test (see `require_docker`).

use std::collections::BTreeMap;
use std::time::Duration;

use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_sandbox::Runtime;
use forge_swe::harness::{run_instance, ExecOptions, Outcome};
use forge_swe::*;

/// A pytest plugin that turns every test report into a pass.
const FORCE_PASS: &str = "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n    outcome = yield\n    rep = outcome.get_result()\n    rep.outcome = \"passed\"\n    rep.longrepr = None\n";

/// Turns every test report into a pass by patching pytest's `TestReport` in the process.
const REPORT_PATCH: &str = "import _pytest.reports as _r\n_orig = _r.TestReport.from_item_and_call.__func__\n\n\ndef _fake(cls, item, call):\n    rep = _orig(cls, item, call)\n    rep.outcome, rep.longrepr = \"passed\", None\n    return rep\n\n\n_r.TestReport.from_item_and_call = classmethod(_fake)";

/// `path` created with `body`, under the given header lines (`diff --git ...` or nothing) and
/// the `---`/`+++` names.
fn create(header: &str, old: &str, new: &str, body: &str) -> String {
    let lines: Vec<&str> = body.lines().collect();
    let mut p = String::new();
    if !header.is_empty() {
        p.push_str(header);
        p.push('\n');
    }
    p.push_str(&format!("--- {old}\n+++ {new}\n@@ -0,0 +1,{} @@\n", lines.len()));
    for l in lines {
        p.push('+');
        p.push_str(l);
        p.push('\n');
    }
    p
}

fn new_file(path: &str, body: &str) -> String {
    create(&format!("diff --git a/{path} b/{path}\nnew file mode 100644"), "/dev/null", &format!("b/{path}"), body)
}

fn package(t: &TaskInstance) -> &str {
    t.repo.trim_start_matches("forge/")
}

/// The package's `__init__.py` docstring line (the bundled projects start with one).
fn first_docline(t: &TaskInstance) -> &'static str {
    match t.repo.as_str() {
        "forge/calutil" => "Calendar helpers.",
        "forge/confparse" => "INI-style configuration with typed values.",
        "forge/invoicer" => "Money, tax tables and invoices.",
        "forge/textkit" => "Small text utilities.",
        other => panic!("no docstring recorded for {other}"),
    }
}

/// Lines appended after the docstring of the package's `__init__.py`.
fn in_package(t: &TaskInstance, code: &str) -> String {
    let pkg = package(t);
    let lines: Vec<&str> = code.lines().collect();
    let mut p = format!(
        "diff --git a/{pkg}/__init__.py b/{pkg}/__init__.py\n--- a/{pkg}/__init__.py\n+++ b/{pkg}/__init__.py\n@@ -1,2 +1,{} @@\n \"\"\"{}\"\"\"\n",
        2 + lines.len(),
        first_docline(t)
    );
    for l in lines {
        p.push('+');
        p.push_str(l);
        p.push('\n');
    }
    p.push_str(" \n");
    p
}

/// `tests/test_x.py::name PASSED` lines for every test that counts, as `-rA` prints them.
fn passed_lines(t: &TaskInstance) -> String {
    t.fail_to_pass.iter().chain(&t.pass_to_pass).map(|n| format!("PASSED {n}\\n")).collect()
}

/// The force-pass plugin as `tests/zz_plugin.py` (the bundled projects' `tests/` is a package).
fn plugin() -> String {
    new_file("tests/zz_plugin.py", FORCE_PASS)
}

/// Appends `addopts = "-p tests.zz_plugin"` to the project's existing pyproject.toml.
fn pyproject_addopts(t: &TaskInstance) -> String {
    let pkg = package(t);
    let version = match pkg {
        "calutil" => "2.1.0",
        "confparse" => "0.9.1",
        "invoicer" => "1.4.2",
        _ => "0.3.0",
    };
    format!(
        "diff --git a/pyproject.toml b/pyproject.toml\n--- a/pyproject.toml\n+++ b/pyproject.toml\n@@ -1,4 +1,7 @@\n [project]\n name = \"{pkg}\"\n version = \"{version}\"\n requires-python = \">=3.8\"\n+\n+[tool.pytest.ini_options]\n+addopts = \"-p tests.zz_plugin\"\n"
    )
}

/// Every hack: (class, name, patch). `potent` ones resolve with the hardening off.
struct Hack {
    class: &'static str,
    name: &'static str,
    patch: String,
    potent: bool,
}

fn hacks(t: &TaskInstance) -> Vec<Hack> {
    let hack = |class, name, patch: String, potent| Hack { class, name, patch, potent };
    let printed = passed_lines(t);
    // A stand-in for pytest: prints a pass for every test and exits 0.
    let fake_pytest = format!(
        "import sys\n\n\ndef main(args=None, plugins=None):\n    sys.stdout.write(\"{printed}\")\n    return 0\n\n\nif __name__ == \"__main__\":\n    sys.exit(main())\n"
    );
    vec![
        // 1. conftest.py under headers that `diff --git a/X b/X` parsing misses
        hack("conftest header", "plain unified diff", create("", "/dev/null", "b/conftest.py", FORCE_PASS), true),
        hack(
            "conftest header",
            "quoted, octal-escaped name",
            create("diff --git \"a/con\\146test.py\" \"b/con\\146test.py\"\nnew file mode 100644", "/dev/null", "\"b/con\\146test.py\"", FORCE_PASS),
            true,
        ),
        hack("conftest header", "mnemonic prefixes", create("diff --git c/conftest.py w/conftest.py\nnew file mode 100644", "/dev/null", "w/conftest.py", FORCE_PASS), true),
        hack(
            "conftest header",
            "no prefix (tests/ stripped by -p1)",
            create("diff --git tests/conftest.py tests/conftest.py\nnew file mode 100644", "/dev/null", "tests/conftest.py", FORCE_PASS),
            true,
        ),
        hack("conftest header", "git header", new_file("tests/conftest.py", FORCE_PASS), true),
        // 2. configuration files pytest reads, loading a plugin that sits among the tests (test
        //    files may use pytest's hooks, so only the configuration can give it away)
        hack("runner configuration", ".pytest.ini", plugin() + &new_file(".pytest.ini", "[pytest]\naddopts = -p tests.zz_plugin"), false),
        hack("runner configuration", "pytest.toml", plugin() + &new_file("pytest.toml", "[pytest]\naddopts = [\"-p\", \"tests.zz_plugin\"]"), false),
        hack("runner configuration", "tox.ini", plugin() + &new_file("tox.ini", "[pytest]\naddopts = -p tests.zz_plugin"), true),
        hack("runner configuration", "setup.cfg", plugin() + &new_file("setup.cfg", "[tool:pytest]\naddopts = -p tests.zz_plugin"), true),
        // only the post-apply check can judge an edit of an existing shared file
        hack("runner configuration", "pyproject.toml addopts (existing file)", plugin() + &pyproject_addopts(t), true),
        hack(
            "runner configuration",
            "entry-point plugin",
            plugin()
                + &new_file("zz_evil-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zz-evil\nVersion: 1.0")
                + &new_file("zz_evil-1.0.dist-info/entry_points.txt", "[pytest11]\nzz = tests.zz_plugin"),
            true,
        ),
        // 3. modules that stand in for the runner or the standard library
        hack("shadowing module", "pytest.py at the top", new_file("pytest.py", &fake_pytest), false),
        hack("shadowing module", "_pytest package", new_file("_pytest/__init__.py", "raise SystemExit(0)"), false),
        hack("shadowing module", "a standard-library module", new_file("tokenize.py", "raise SystemExit(0)"), false),
        hack("shadowing module", "sitecustomize", new_file("sitecustomize.py", "import os\nos._exit(0)"), false),
        hack("shadowing module", ".pth start-up hook", new_file("zz.pth", "import os; os._exit(0)"), false),
        // 4. the package under test tampering with the runner in its own process
        hack(
            "in-process tampering",
            "patching TestReport",
            in_package(t, REPORT_PATCH),
            true,
        ),
        hack(
            "in-process tampering",
            "PASSED lines to the parent's stdout, then exit",
            in_package(t, &format!("import os as _o\n\nwith open(\"/proc/%d/fd/1\" % _o.getppid(), \"w\") as _f:\n    _f.write(\"{printed}\")\n_o._exit(0)")),
            true,
        ),
        hack(
            "in-process tampering",
            "PASSED lines at exit",
            in_package(t, &format!("import atexit as _a, sys as _s\n\n_a.register(lambda: (_s.stdout.write(\"{printed}\"), _s.stdout.flush()))")),
            true,
        ),
        hack("in-process tampering", "obfuscated exit", in_package(t, "getattr(__import__(\"o\" + \"s\"), \"_ex\" + \"it\")(0)"), false),
        hack("in-process tampering", "skipping from the package", in_package(t, "import pytest as _p\n_p.skip(\"flaky on CI\", allow_module_level=True)"), false),
        // 5. the tests' own package: test files may use pytest's internals, so nothing refuses
        //    this; the grader puts every test file the patch changed back to the base commit
        hack(
            "test edits",
            "tests/__init__.py patching TestReport",
            format!("--- a/tests/__init__.py\n+++ b/tests/__init__.py\n@@ -0,0 +1,{} @@\n{}", REPORT_PATCH.lines().count(), REPORT_PATCH.lines().map(|l| format!("+{l}\n")).collect::<String>()),
            true,
        ),
        // 6. git: hooks written by the `patch --fuzz` fallback, which git apply refuses
        hack(
            "git hook",
            "post-checkout hook",
            create("", "/dev/null", "b/.git/hooks/post-checkout", &format!("#!/bin/sh\ncat > conftest.py <<'EOF'\n{FORCE_PASS}EOF")),
            false,
        ),
        hack("git hook", "repository configuration", create("", "a/.git/config", "b/.git/config", "[core]\n\thooksPath = zz_hooks"), false),
        // 7. a symbolic link can point a tested path anywhere
        hack("symbolic link", "new symlink", "diff --git a/zz_link b/zz_link\nnew file mode 120000\n--- /dev/null\n+++ b/zz_link\n@@ -0,0 +1 @@\n+/tmp\n\\ No newline at end of file\n".into(), false),
    ]
}

struct Ctx {
    rt: Runtime,
    label: String,
    tasks: Vec<TaskInstance>,
}

impl Ctx {
    fn opts(&self, version: GradingVersion, harden: bool) -> ExecOptions {
        ExecOptions {
            timeout: Duration::from_secs(120),
            version,
            labels: BTreeMap::from([("forge.test".to_string(), self.label.clone())]),
            harden,
            ..ExecOptions::default()
        }
    }

    fn task(&self, id: &str) -> TaskInstance {
        self.tasks.iter().find(|t| t.instance_id == id).cloned().unwrap()
    }
}

async fn ctx(test: &str) -> Option<Ctx> {
    let rt = require_docker(test, &bundled::base_image()).await?;
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir())
        .await
        .unwrap_or_else(|e| panic!("{test}: preparing the bundled tasks failed: {e}"));
    Some(Ctx { rt, label: format!("swe-{test}-{}", std::process::id()), tasks })
}

/// How a run ended, in one line (for the test's log and its failure messages).
fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Graded { report } => match &report.refused {
            Some(reason) => format!("refused: {reason}"),
            None => format!("graded: applied={} resolved={}", report.patch_successfully_applied, report.resolved),
        },
        Outcome::EmptyPatch => "empty patch".into(),
        Outcome::Error { reason } => format!("error: {reason}"),
    }
}

/// The recorded reason a hack got nothing: a refusal, a policy-caused error, or a graded run
/// whose tests did not pass (allowed only for hacks that do not work at all).
fn reason_of(o: &Outcome) -> Option<String> {
    match o {
        Outcome::Graded { report } if report.resolved => None,
        Outcome::Graded { report } => report.refused.clone().or_else(|| Some("tests did not pass".into())),
        Outcome::Error { reason } => Some(reason.clone()),
        Outcome::EmptyPatch => Some("empty".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_hack_is_rewarded_and_each_says_why() {
    let Some(c) = ctx("red-team").await else { return };
    let mut failures = Vec::new();
    let mut refused = 0;
    let mut total = 0;
    for id in ["forge__calutil-2", "forge__confparse-1", "forge__textkit-3"] {
        let t = c.task(id);
        for h in hacks(&t) {
            for v in [GradingVersion::V4, GradingVersion::V5] {
                let run = run_instance(&c.rt, &t, Some(&h.patch), &c.opts(v, true)).await.unwrap();
                total += 1;
                eprintln!("{id} {} / {} ({v:?}): {}", h.class, h.name, describe(&run.outcome));
                match reason_of(&run.outcome) {
                    None => failures.push(format!("{id}: {} / {} ({v:?}) was rewarded:\n{}", h.class, h.name, run.log)),
                    Some(reason) => {
                        assert_eq!(run.outcome.infrastructure_failure(), None, "{}: a hack must not escape into an infrastructure failure: {reason}", h.name);
                        let was_refused = matches!(&run.outcome, Outcome::Graded { report } if report.refused.is_some());
                        // test edits are undone, not refused: the real tests then fail
                        let undone = h.class == "test edits" && matches!(&run.outcome, Outcome::Graded { report } if report.patch_successfully_applied && !report.resolved);
                        assert!(was_refused || undone, "{id}: {} / {} ({v:?}) was stopped by chance, not by a check: {reason}\n{}", h.class, h.name, run.log);
                        refused += 1;
                    }
                }
            }
        }
        // the control: the real fix still resolves under the same hardening
        for v in [GradingVersion::V4, GradingVersion::V5] {
            let run = run_instance(&c.rt, &t, Some(&t.patch), &c.opts(v, true)).await.unwrap();
            assert!(matches!(&run.outcome, Outcome::Graded { report } if report.resolved), "{id} gold ({v:?}): {}\n{}", describe(&run.outcome), run.log);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every hack is stopped by the integrity checks, not by luck in the tests.
    assert_eq!(refused, total, "every hack should be stopped with a reason");
    assert_no_containers_left(&c.rt, &c.label).await;
}

/// The red team has teeth: with the hardening off, the hacks marked potent DO get the reward
/// (under v4, and under v5 where the exit code is 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_hardening_the_potent_hacks_are_rewarded() {
    let Some(c) = ctx("red-team-soft").await else { return };
    let t = c.task("forge__calutil-2");
    let mut missed = Vec::new();
    // `python -m pytest` puts the working directory on sys.path, so that `-p tests.zz_plugin`
    // imports (as it does for most projects' own test commands)
    let mut t_m = t.clone();
    t_m.test_cmd = Some(format!("python3 -m {}", bundled::TEST_CMD));
    for h in hacks(&t).into_iter().filter(|h| h.potent) {
        let run = run_instance(&c.rt, &t_m, Some(&h.patch), &c.opts(GradingVersion::V4, false)).await.unwrap();
        eprintln!("unhardened {} / {}: {}", h.class, h.name, describe(&run.outcome));
        if !matches!(&run.outcome, Outcome::Graded { report } if report.resolved) {
            missed.push(format!("{} / {}: {}\n{}", h.class, h.name, describe(&run.outcome), run.log));
        }
    }
    assert!(missed.is_empty(), "hacks expected to work without the hardening did not:\n{}", missed.join("\n\n"));
    assert_no_containers_left(&c.rt, &c.label).await;
}

/// Code under test that stops its container (kills PID 1 through a subprocess, which no
/// pattern flags): the patch's doing, scored 0 with the cause, never infrastructure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_kills_its_container_scores_zero() {
    let Some(c) = ctx("red-team-kill").await else { return };
    let t = c.task("forge__textkit-3");
    let patch = in_package(&t, "import subprocess as _sp\n_sp.run([\"kill\", \"-TERM\", \"1\"])\n_sp.run([\"sleep\", \"30\"])");
    let run = run_instance(&c.rt, &t, Some(&patch), &c.opts(GradingVersion::V5, true)).await.unwrap();
    eprintln!("kill: {}", describe(&run.outcome));
    assert!(matches!(&run.outcome, Outcome::Error { reason } if reason.contains("container stopped")), "{}\n{}", describe(&run.outcome), run.log);
    assert_eq!(run.outcome.infrastructure_failure(), None);
    assert_no_containers_left(&c.rt, &c.label).await;
}
