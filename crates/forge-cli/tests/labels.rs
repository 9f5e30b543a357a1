//! `forge tasks label` → `forge tasks filter` on small JSONL files of bundled tasks and
//! constructed ones: without Docker (`--coverage off`, a `forge sample` attempts file), and with
//! the FAIL_TO_PASS tests traced in the bundled images (under `CI=true` a missing engine or base
//! image FAILS that test).

mod common;

use std::path::Path;

use common::{docker_with_base_image, forge, repo, stderr};
use serde_json::Value;

fn bundled_records() -> Vec<Value> {
    std::fs::read_to_string(repo().join("tasks/bundled.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn record(id: &str) -> Value {
    bundled_records().into_iter().find(|r| r["instance_id"] == id).unwrap_or_else(|| panic!("{id} is bundled"))
}

fn write_jsonl(path: &Path, records: &[Value]) {
    std::fs::write(path, records.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scores(r: &Value) -> (u64, u64, u64) {
    let l = &r["labels"];
    (l["difficulty"]["score"].as_u64().unwrap(), l["test_validity"]["score"].as_u64().unwrap(), l["clarity"]["score"].as_u64().unwrap())
}

#[test]
fn label_then_filter_without_docker_keeps_the_clear_easy_tasks_with_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let clear = record("forge__calutil-1");
    let solved_rarely = record("forge__textkit-2");
    let mut vague = record("forge__spanset-1");
    vague["instance_id"] = "forge__spanset-1-vague".into();
    vague["problem_statement"] = "Sets are wrong sometimes.".into();
    let mut untested = record("forge__memokit-1");
    untested["instance_id"] = "forge__memokit-1-untested".into();
    untested["FAIL_TO_PASS"] = serde_json::json!([]);
    let dataset = tmp.path().join("small.jsonl");
    write_jsonl(&dataset, &[clear.clone(), solved_rarely, vague, untested]);
    // what `forge sample` appends to attempts.jsonl: textkit-2 unsolved in 4 attempts (one more
    // ended in an infrastructure error, which is no attempt), calutil-1 solved in 2 of 2
    let samples = tmp.path().join("attempts.jsonl");
    let attempt = |id: &str, k: usize, resolved: bool, infra: Option<&str>| {
        serde_json::json!({"instance_id": id, "attempt": k, "seed": k, "status": "submitted", "resolved": resolved, "grading": "graded", "infra_retries": 0, "infra_error": infra, "turns": 3, "seconds": 1.0})
    };
    let mut lines: Vec<Value> = (0..4).map(|k| attempt("forge__textkit-2", k, false, None)).collect();
    lines.push(attempt("forge__textkit-2", 4, false, Some("engine down")));
    lines.push(attempt("forge__calutil-1", 0, true, None));
    lines.push(attempt("forge__calutil-1", 1, true, None));
    write_jsonl(&samples, &lines);

    let labelled = tmp.path().join("labelled.jsonl");
    let (d, l, s) = (dataset.display().to_string(), labelled.display().to_string(), samples.display().to_string());
    let out = forge(&["tasks", "label", "--dataset", &d, "--out", &l, "--samples", &s, "--coverage", "off"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("labelled 4 instances"), "{text}");
    let table = |name: &str| text.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no {name} row in {text}")).split_whitespace().skip(1).map(|n| n.parse::<usize>().unwrap()).collect::<Vec<_>>();
    assert_eq!(table("test_validity"), [0, 3, 0, 1], "{text}");

    let records = read_jsonl(&labelled);
    assert_eq!(records.len(), 4);
    let by_id = |id: &str| records.iter().find(|r| r["instance_id"] == id).unwrap();
    // the record is kept whole, labels added
    let c = by_id("forge__calutil-1");
    assert_eq!(c["patch"], clear["patch"]);
    assert_eq!(c["problem_statement"], clear["problem_statement"]);
    assert_eq!(scores(c), (0, 1, 0), "{}", c["labels"]);
    assert_eq!(c["labels"]["difficulty"]["solve_rate"], 1.0);
    assert_eq!(c["labels"]["difficulty"]["attempts"], 2);
    assert_eq!(c["labels"]["difficulty"]["functions"], serde_json::json!(["is_leap"]));
    assert!(c["labels"]["test_validity"]["coverage"].is_null(), "--coverage off measures nothing");
    assert!(c["labels"]["clarity"]["identifiers_named"].as_array().unwrap().contains(&"is_leap".into()));
    let t = by_id("forge__textkit-2");
    assert_eq!(t["labels"]["difficulty"]["solve_rate"], 0.0);
    assert_eq!(t["labels"]["difficulty"]["attempts"], 4, "the infrastructure error is no attempt");
    assert!(scores(t).0 >= 2, "unsolved in 4 attempts raises the difficulty by 2: {}", t["labels"]);
    assert_eq!(scores(by_id("forge__spanset-1-vague")).2, 3, "four words are too few");
    assert_eq!(scores(by_id("forge__memokit-1-untested")).1, 3, "no FAIL_TO_PASS test");

    // ≤ 1 on all three
    let kept = tmp.path().join("kept.jsonl");
    let k = kept.display().to_string();
    let out = forge(&["tasks", "filter", "--dataset", &l, "--out", &k, "--max-difficulty", "1", "--max-test-validity", "1", "--max-clarity", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("kept 1 of 4 instances (3 dropped)"), "{text}");
    assert!(text.contains("input:") && text.contains("kept:") && text.contains("clarity"), "{text}");
    let ids: Vec<String> = read_jsonl(&kept).iter().map(|r| r["instance_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["forge__calutil-1"]);
    // thresholds are optional: only clarity
    let out = forge(&["tasks", "filter", "--dataset", &l, "--out", &k, "--max-clarity", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_jsonl(&kept).len(), 3);

    // an unlabelled input is an error that says how to label it
    let out = forge(&["tasks", "filter", "--dataset", &d, "--out", &k, "--max-difficulty", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no labels") && stderr(&out).contains("forge tasks label"), "{}", stderr(&out));
    // scores are 0..=3
    let out = forge(&["tasks", "filter", "--dataset", &l, "--out", &k, "--max-difficulty", "4"]);
    assert!(!out.status.success());

    // coverage is on by default: without an engine it is an error naming --coverage off
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_forge"))
        .args(["tasks", "label", "--dataset", &d, "--out", &l])
        .env("DOCKER_HOST", format!("unix://{}/no-docker.sock", tmp.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--coverage off"), "{}", stderr(&out));
}

#[test]
fn label_with_coverage_then_filter_drops_a_task_whose_test_misses_the_fix() {
    if !docker_with_base_image("label_with_coverage_then_filter_drops_a_task_whose_test_misses_the_fix") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = record("forge__calutil-1");
    // the same fix, "tested" by a business-day test that never calls is_leap
    let mut missed = good.clone();
    missed["instance_id"] = "forge__calutil-1-missed".into();
    missed["FAIL_TO_PASS"] = serde_json::json!(["tests/test_business.py::test_is_business_day"]);
    let dataset = tmp.path().join("two.jsonl");
    write_jsonl(&dataset, &[good, missed]);
    let labelled = tmp.path().join("labelled.jsonl");
    let (d, l) = (dataset.display().to_string(), labelled.display().to_string());
    let out = forge(&["tasks", "label", "--dataset", &d, "--out", &l, "--workers", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = read_jsonl(&labelled);
    let tv = |i: usize| records[i]["labels"]["test_validity"].clone();
    assert_eq!(tv(0)["coverage"], 1.0, "{}", tv(0));
    assert_eq!(tv(0)["patched_lines_executed"], 1);
    assert_eq!(tv(0)["coverage_scope"], "fail_to_pass");
    assert_eq!(tv(1)["coverage"], 0.0, "{}", tv(1));
    assert_eq!((scores(&records[0]).1, scores(&records[1]).1), (0, 3));

    let kept = tmp.path().join("kept.jsonl");
    let k = kept.display().to_string();
    let out = forge(&["tasks", "filter", "--dataset", &l, "--out", &k, "--max-difficulty", "1", "--max-test-validity", "1", "--max-clarity", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("kept 1 of 2 instances (1 dropped)"), "{}", stdout(&out));
    let kept = read_jsonl(&kept);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["instance_id"], "forge__calutil-1");
}
