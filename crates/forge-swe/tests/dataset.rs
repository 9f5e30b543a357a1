//! Loading instances and predictions (parquet, JSONL, JSON), error messages naming file and line,
//! and the consistency of the checked-in bundled dataset with its sources. No Docker needed.

use std::path::{Path, PathBuf};

use forge_swe::instance::patch_files;
use forge_swe::{
    bundled, load_instances, load_predictions, save_instances_jsonl, PredictionsSource,
};

/// SWE-bench Verified: `$FORGE_SWEBENCH_PARQUET`, else the copy committed under data/.
fn verified() -> PathBuf {
    std::env::var("FORGE_SWEBENCH_PARQUET")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/swebench_verified.parquet")
        })
}

/// The committed copy is always there; a missing file is a broken checkout, not a reason to skip.
fn verified_instances() -> Vec<forge_swe::TaskInstance> {
    let path = verified();
    assert!(
        path.exists(),
        "{} is missing: it is committed under data/ (or set FORGE_SWEBENCH_PARQUET)",
        path.display()
    );
    load_instances(&path).unwrap()
}

#[test]
fn swebench_verified_parquet_round_trips() {
    let insts = verified_instances();
    assert_eq!(insts.len(), 500);
    let ids: std::collections::BTreeSet<_> = insts.iter().map(|i| &i.instance_id).collect();
    assert_eq!(ids.len(), 500);
    let django = insts.iter().find(|i| i.repo == "django/django").unwrap();
    assert!(!django.fail_to_pass.is_empty());
    assert!(django.patch.starts_with("diff --git"));
    assert!(!django.test_files().is_empty());
    // every instance has a known parser behaviour, and Verified uses exactly these 7
    let mut behaviours = std::collections::BTreeSet::new();
    for i in &insts {
        assert!(!i.base_commit.is_empty() && !i.problem_statement.is_empty());
        assert!(!i.fail_to_pass.is_empty(), "{}", i.instance_id);
        behaviours
            .insert(forge_swe::LogParser::for_instance(i.log_parser.as_deref(), &i.repo).name());
    }
    assert_eq!(behaviours.len(), 7, "{behaviours:?}");
    // round trip through JSONL keeps every field, known or not
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.jsonl");
    save_instances_jsonl(&out, &insts).unwrap();
    let back = load_instances(&out).unwrap();
    assert_eq!(back, insts);
    // a JSON list and a dict keyed by id give the same
    let list = dir.path().join("v.json");
    std::fs::write(&list, serde_json::to_string(&insts[..3]).unwrap()).unwrap();
    assert_eq!(load_instances(&list).unwrap(), insts[..3].to_vec());
}

#[test]
fn test_lists_as_strings_or_lists() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.jsonl");
    std::fs::write(
        &p,
        r#"{"repo":"a/b","instance_id":"a__b-1","base_commit":"c","FAIL_TO_PASS":"[\"t1\"]","PASS_TO_PASS":["t2","t3"]}

{"repo":"a/b","instance_id":"a__b-2","base_commit":"c","FAIL_TO_PASS":["x"],"PASS_TO_PASS":"[]","custom":{"k":1}}
"#,
    )
    .unwrap();
    let v = load_instances(&p).unwrap();
    assert_eq!(v[0].fail_to_pass, vec!["t1"]);
    assert_eq!(v[0].pass_to_pass, vec!["t2", "t3"]);
    assert!(v[1].pass_to_pass.is_empty());
    assert_eq!(v[1].extra["custom"]["k"], 1);
}

#[test]
fn bad_records_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"repo\":\"a/b\",\"instance_id\":\"x\",\"base_commit\":\"c\",\"FAIL_TO_PASS\":[],\"PASS_TO_PASS\":[]}\n{not json\n",
    )
    .unwrap();
    let e = load_instances(&p).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2:"), "{e}");
    std::fs::write(&p, "{\"repo\":\"a/b\",\"instance_id\":\"x\",\"base_commit\":\"c\",\"FAIL_TO_PASS\":\"[oops\",\"PASS_TO_PASS\":[]}\n").unwrap();
    let e = load_instances(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.jsonl:1:") && e.contains("FAIL_TO_PASS") || e.contains("JSON-encoded"),
        "{e}"
    );
    std::fs::write(&p, "{\"repo\":\"a/b\",\"base_commit\":\"c\"}\n").unwrap();
    let e = load_instances(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.jsonl:1:") && e.contains("instance_id"),
        "{e}"
    );
    let e = load_instances(Path::new("/nonexistent/x.parquet"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.parquet"), "{e}");
    let notpq = dir.path().join("x.parquet");
    std::fs::write(&notpq, "hello").unwrap();
    let e = load_instances(&notpq).unwrap_err().to_string();
    assert!(e.contains("x.parquet") && e.contains("parquet"), "{e}");
    // instance ids name log directories: ones that are not plain file names are refused
    let record = |id: &str| format!("{{\"repo\":\"a/b\",\"instance_id\":{},\"base_commit\":\"c\",\"FAIL_TO_PASS\":[],\"PASS_TO_PASS\":[]}}\n", serde_json::to_string(id).unwrap());
    for id in ["../../etc", "a/b", "..", "", "-rf", "x\ny"] {
        std::fs::write(&p, format!("{}{}", record("ok-1"), record(id))).unwrap();
        let e = load_instances(&p).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:2:") && e.contains("not a safe file name"), "{id:?}: {e}");
    }
    // a UTF-8 byte-order mark is accepted; invalid UTF-8 is named with its line
    std::fs::write(&p, format!("\u{feff}{}", record("ok-1"))).unwrap();
    assert_eq!(load_instances(&p).unwrap()[0].instance_id, "ok-1");
    let mut bytes = record("ok-1").into_bytes();
    bytes.extend(b"{\"repo\": \"\xff\"}\n");
    std::fs::write(&p, bytes).unwrap();
    let e = load_instances(&p).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2:") && e.contains("invalid UTF-8"), "{e}");
}

#[test]
fn predictions_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let insts: Vec<forge_swe::TaskInstance> = serde_json::from_str(
        r#"[{"repo":"a/b","instance_id":"i1","base_commit":"c","patch":"GOLD1","FAIL_TO_PASS":[],"PASS_TO_PASS":[]},
            {"repo":"a/b","instance_id":"i2","base_commit":"c","patch":"GOLD2","FAIL_TO_PASS":[],"PASS_TO_PASS":[]}]"#,
    )
    .unwrap();
    let gold = load_predictions(&PredictionsSource::parse("gold"), &insts).unwrap();
    assert_eq!(gold["i2"].model_patch.as_deref(), Some("GOLD2"));
    assert_eq!(gold["i1"].model_name_or_path, "gold");
    let list = dir.path().join("p.json");
    std::fs::write(&list, r#"[{"instance_id":"i1","model_name_or_path":"m/x","model_patch":"P"},{"instance_id":"i2","model_name_or_path":"m/x","model_patch":null}]"#).unwrap();
    let dict = dir.path().join("d.json");
    std::fs::write(&dict, r#"{"i1":{"model_name_or_path":"m/x","model_patch":"P"},"i2":{"instance_id":"i2","model_name_or_path":"m/x","model_patch":null}}"#).unwrap();
    let jsonl = dir.path().join("p.jsonl");
    std::fs::write(&jsonl, "{\"instance_id\":\"i1\",\"model_name_or_path\":\"m/x\",\"model_patch\":\"P\"}\n{\"instance_id\":\"i2\",\"model_name_or_path\":\"m/x\",\"model_patch\":null}\n").unwrap();
    let a = load_predictions(&PredictionsSource::File(list), &insts).unwrap();
    let b = load_predictions(&PredictionsSource::File(dict), &insts).unwrap();
    let c = load_predictions(&PredictionsSource::File(jsonl.clone()), &insts).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a["i1"].model_patch.as_deref(), Some("P"));
    assert_eq!(a["i2"].model_patch, None);
    std::fs::write(
        &jsonl,
        "{\"instance_id\":\"i1\",\"model_patch\":\"P\"}\n{\"model_patch\":\"P\"}\n",
    )
    .unwrap();
    let e = load_predictions(&PredictionsSource::File(jsonl), &insts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("p.jsonl:2:") && e.contains("instance_id"), "{e}");
}

#[test]
fn patch_file_headers() {
    let p = "diff --git a/x/y.py b/x/y.py\n--- a/x/y.py\n+++ b/x/y.py\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/tests/t.py b/tests/t.py\nnew file mode 100644\n";
    assert_eq!(patch_files(p), vec!["x/y.py", "tests/t.py"]);
}

/// The checked-in dataset of `dir` matches its sources: the histories rebuilt here (host git,
/// fixed names and dates) give the same commits and patches. Returns (projects, instances).
fn assert_dataset_matches_sources(dir: &Path) -> (usize, Vec<forge_swe::TaskInstance>) {
    let repos = bundled::discover(dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let built: Vec<_> = repos
        .iter()
        .map(|r| bundled::build_repo(r, &tmp.path().join(&r.name)).unwrap())
        .collect();
    let fresh = bundled::instances_of(&built, &Default::default());
    let checked_in = load_instances(&bundled::dataset_path(dir)).unwrap();
    assert_eq!(fresh.len(), checked_in.len());
    let mut images = std::collections::BTreeSet::new();
    for (a, b) in checked_in.iter().zip(&fresh) {
        assert_eq!(a.instance_id, b.instance_id);
        assert_eq!(
            a.base_commit,
            b.base_commit,
            "{}: regenerate {}",
            a.instance_id,
            bundled::dataset_path(dir).display()
        );
        assert_eq!(a.patch, b.patch, "{}", a.instance_id);
        assert_eq!(a.test_patch, b.test_patch, "{}", a.instance_id);
        assert_eq!(a.image, b.image);
        assert_eq!(a.problem_statement, b.problem_statement, "{}", a.instance_id);
        assert!(
            !a.fail_to_pass.is_empty() && !a.pass_to_pass.is_empty(),
            "{}",
            a.instance_id
        );
        // gold patches touch sources only, test patches tests only
        assert!(patch_files(&a.patch)
            .iter()
            .all(|f| !bundled::is_test_file(f)));
        assert!(patch_files(&a.test_patch)
            .iter()
            .all(|f| bundled::is_test_file(f)));
        images.insert(a.image.clone().unwrap());
    }
    // several instances share one image (one per project)
    assert_eq!(images.len(), repos.len());
    // base commits differ within a project
    let bases: std::collections::BTreeSet<_> = checked_in.iter().map(|i| &i.base_commit).collect();
    assert_eq!(bases.len(), checked_in.len());
    (repos.len(), checked_in)
}

#[test]
fn bundled_dataset_matches_sources() {
    let (projects, instances) = assert_dataset_matches_sources(&bundled::default_tasks_dir());
    assert!(projects >= 4);
    assert!(instances.len() >= 12);
}

fn demo_tasks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tasks-demo")
}

/// The demo curriculum (`scripts/demo/make_demo_tasks.py`): forty projects; the SFT, RL and held-out
/// splits partition them by repository, every gold patch is one changed line.
#[test]
fn demo_dataset_matches_sources_and_splits_partition_it() {
    let dir = demo_tasks_dir();
    let (projects, instances) = assert_dataset_matches_sources(&dir);
    assert_eq!(projects, 40);
    let splits: Vec<(&str, Vec<forge_swe::TaskInstance>)> =
        ["sft", "rl", "heldout"].into_iter().map(|name| (name, load_instances(&dir.join(format!("{name}.jsonl"))).unwrap())).collect();
    assert_eq!(splits.iter().map(|(_, s)| s.len()).collect::<Vec<_>>(), [162, 60, 18]);
    assert_eq!(splits.iter().map(|(_, s)| s.len()).sum::<usize>(), instances.len());
    let repos = |split: &[forge_swe::TaskInstance]| split.iter().map(|i| i.repo.clone()).collect::<std::collections::BTreeSet<_>>();
    for (a, (name_a, split_a)) in splits.iter().enumerate() {
        for inst in split_a {
            let original = instances.iter().find(|i| i.instance_id == inst.instance_id);
            assert_eq!(original, Some(inst), "{name_a}: splits are records of bundled.jsonl");
        }
        for (name_b, split_b) in &splits[a + 1..] {
            assert!(repos(split_a).is_disjoint(&repos(split_b)), "{name_a} and {name_b} share a repository");
        }
    }
    for inst in &instances {
        let changed = |sign: char| inst.patch.lines().filter(|l| l.starts_with(sign) && !l.starts_with(&format!("{sign}{sign}{sign}"))).count();
        assert_eq!((changed('-'), changed('+')), (1, 1), "{}: a one-line fix", inst.instance_id);
    }
}

/// Images are built from the task sources the dataset file sits with, else from `tasks/`.
#[test]
fn tasks_dir_is_found_from_the_dataset_file() {
    let demo = demo_tasks_dir();
    assert_eq!(bundled::tasks_dir_for(&demo.join("heldout.jsonl")), demo);
    let elsewhere = tempfile::tempdir().unwrap();
    let dataset = elsewhere.path().join("instances.jsonl");
    assert_eq!(bundled::tasks_dir_for(&dataset), bundled::default_tasks_dir());
    std::fs::create_dir_all(elsewhere.path().join("proj/repo")).unwrap();
    assert_eq!(bundled::tasks_dir_for(&dataset), elsewhere.path());
}

/// For every SWE-bench Verified instance: a log in its parser's format in which every
/// FAIL_TO_PASS and PASS_TO_PASS test passes grades as resolved, and one with the first
/// FAIL_TO_PASS test failing does not. Names the official parsers cannot represent (ids cut at a
/// space by `split()`) are what v5's prefix matching is for: counted, not hidden.
#[test]
fn verified_test_names_round_trip_through_their_parsers() {
    use forge_swe::grading::{self, GradingVersion};
    use forge_swe::LogParser;
    let insts = verified_instances();
    let line = |p: LogParser, name: &str, status: &str| -> String {
        match (p, status) {
            (LogParser::Django, "PASSED") => format!("{name} ... ok"),
            (LogParser::Django, _) => format!("{name} ... FAIL"),
            (LogParser::Sympy, "PASSED") => format!("{name} ok"),
            (LogParser::Sympy, _) => format!("{name} F"),
            (LogParser::Seaborn, _) => format!("{status} {name}"),
            (_, "FAILED") => format!("FAILED {name} - AssertionError"),
            _ => format!("{status} {name}"),
        }
    };
    let (mut v4_ok, mut v5_ok) = (0, 0);
    for inst in &insts {
        let p = LogParser::for_instance(inst.log_parser.as_deref(), &inst.repo);
        let tests: Vec<&String> = inst.fail_to_pass.iter().chain(&inst.pass_to_pass).collect();
        let body: Vec<String> = tests.iter().map(|t| line(p, t, "PASSED")).collect();
        let log = format!(
            "{}\n{}\n{}\n{} 0\n",
            grading::START_TEST_OUTPUT,
            body.join("\n"),
            grading::END_TEST_OUTPUT,
            grading::TEST_EXIT_CODE
        );
        let r4 = grading::grade(inst, Some("x"), &log, GradingVersion::V4).resolved;
        let r5 = grading::grade(inst, Some("x"), &log, GradingVersion::V5).resolved;
        v4_ok += usize::from(r4);
        v5_ok += usize::from(r5);
        assert!(
            r5 || !r4,
            "{}: v5 must resolve what v4 resolves",
            inst.instance_id
        );
        // one failing FAIL_TO_PASS test: never resolved
        let mut body = body.clone();
        body[0] = line(p, &inst.fail_to_pass[0], "FAILED");
        let log = format!(
            "{}\n{}\n{}\n{} 1\n",
            grading::START_TEST_OUTPUT,
            body.join("\n"),
            grading::END_TEST_OUTPUT,
            grading::TEST_EXIT_CODE
        );
        for v in [GradingVersion::V4, GradingVersion::V5] {
            assert!(
                !grading::grade(inst, Some("x"), &log, v).resolved,
                "{} {v:?}",
                inst.instance_id
            );
        }
    }
    eprintln!("synthetic all-pass logs resolve: v4 {v4_ok}/500, v5 {v5_ok}/500");
    assert!(v4_ok >= 450, "v4 resolves only {v4_ok}/500");
    assert!(v5_ok >= v4_ok);
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Base commits are derived by reverse-applying each task's fix.patch to repo/: a repo/ edited
/// without its patch is refused with an error naming the patch, never built into a wrong history.
#[test]
fn fix_patch_out_of_date_with_repo_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("tasks/textkit");
    copy_tree(&bundled::default_tasks_dir().join("textkit"), &project);
    let repos = bundled::discover(&tmp.path().join("tasks")).unwrap();
    bundled::build_repo(&repos[0], &tmp.path().join("ok")).unwrap();
    let wrap = project.join("repo/textkit/wrap.py");
    let text = std::fs::read_to_string(&wrap).unwrap();
    assert!(text.contains("<= width:"));
    std::fs::write(&wrap, text.replace("<= width:", "<= width + 0:")).unwrap();
    let err = bundled::build_repo(&repos[0], &tmp.path().join("stale"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("002-wrap-exact-width/fix.patch") && err.contains("does not revert"),
        "{err}"
    );
}

#[test]
fn instance_selection_keeps_dataset_order_and_names_unknown_ids() {
    let all = verified_instances();
    let ids = |v: &[forge_swe::TaskInstance]| v.iter().map(|i| i.instance_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&forge_swe::select_instances(all.clone(), &[]).unwrap()), ids(&all));
    let wanted = vec![all[5].instance_id.clone(), all[2].instance_id.clone()];
    assert_eq!(ids(&forge_swe::select_instances(all.clone(), &wanted).unwrap()), [all[2].instance_id.clone(), all[5].instance_id.clone()]);
    let unknown = vec![all[0].instance_id.clone(), "nobody__nothing-1".to_string()];
    assert_eq!(forge_swe::select_instances(all, &unknown).unwrap_err(), "nobody__nothing-1");
}

/// The reward-integrity control: of SWE-bench Verified's 500 gold patches, the checks before
/// application refuse none (no fix needs a forbidden path or reaches into the test runner), and
/// the one gold patch that edits a shared configuration file (pylint-dev__pylint-4661's
/// setup.cfg: a dependency, isort and mypy sections) edits nothing the runner reads.
#[test]
fn the_integrity_checks_refuse_no_gold_patch_of_swebench_verified() {
    use forge_swe::integrity::{patch_files as files_of, refusal_for_patch, SHARED_CONFIG};
    let instances = verified_instances();
    assert_eq!(instances.len(), 500);
    let refused: Vec<String> = instances
        .iter()
        .filter_map(|i| refusal_for_patch(&i.patch).map(|r| format!("{}: {r}", i.instance_id)))
        .collect();
    assert!(refused.is_empty(), "gold patches refused:\n{}", refused.join("\n"));
    let shared: Vec<(&str, String)> = instances
        .iter()
        .flat_map(|i| {
            files_of(&i.patch).into_iter().flat_map(|f| f.names).filter_map(move |n| {
                let name = n.rsplit('/').next().unwrap_or(&n).to_string();
                SHARED_CONFIG.contains(&name.as_str()).then_some((i.instance_id.as_str(), n))
            })
        })
        .collect();
    assert_eq!(shared, [("pylint-dev__pylint-4661", "a/setup.cfg".to_string()), ("pylint-dev__pylint-4661", "b/setup.cfg".to_string())]);
    // The test patches are the benchmark's own: parsed, they name exactly the files the
    // git-header parser names (the two header parsers agree on real data).
    for i in &instances {
        let names: Vec<String> = files_of(&i.test_patch).into_iter().filter_map(|f| f.names.get(1).map(|n| n.trim_start_matches("b/").to_string())).collect();
        assert_eq!(names, patch_files(&i.test_patch), "{}", i.instance_id);
    }
}

/// The same control on the project's own task sets (bundled and demo): no gold patch refused.
#[test]
fn the_integrity_checks_refuse_no_gold_patch_of_the_project_task_sets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for set in ["tasks/bundled.jsonl", "tasks-demo/bundled.jsonl", "tasks-demo/sft.jsonl", "tasks-demo/rl.jsonl", "tasks-demo/heldout.jsonl"] {
        for i in load_instances(&root.join(set)).unwrap() {
            assert_eq!(forge_swe::integrity::refusal_for_patch(&i.patch), None, "{set}: {}", i.instance_id);
            checked += 1;
        }
    }
    assert!(checked >= 36 + 240 + 162 + 60 + 18, "{checked} gold patches checked");
}
