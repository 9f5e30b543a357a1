//! `forge foundry mine` end to end: the history of a bundled project (built here), mined into
//! tasks whose statements a real OpenAI-compatible server (`forge serve` with the fixture
//! model) rewrites; the tasks pass `forge tasks validate`, and `forge eval swebench` resolves
//! every one with the gold patches.
//!
//! Real Docker, real pytest; under `CI=true` a missing engine or base image FAILS the test.

mod common;

use common::{chat_model_dir, docker_with_base_image, forge, stderr, Server};
use serde_json::Value;

#[test]
fn mined_tasks_validate_and_gold_resolves_them() {
    let test = "foundry-cli";
    if !docker_with_base_image(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tasks_dir = forge_swe::bundled::default_tasks_dir();
    let src = forge_swe::bundled::discover(&tasks_dir).unwrap().into_iter().find(|r| r.name == "textkit").unwrap();
    let built = forge_swe::bundled::build_repo(&src, &tmp.path().join("textkit")).unwrap();
    let model = chat_model_dir(tmp.path(), 16384);
    let (_server, url) = Server::start(&model, "tiny", 4);
    let out = tmp.path().join("mined.jsonl");
    let o = forge(&[
        "foundry", "mine", "--repo", built.workdir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--name", "forge-test/textkit",
        "--workers", "2", "--rewrite-endpoint", &url, "--rewrite-model", "tiny",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}\n{}", stderr(&o));
    assert!(stdout.contains("4 commits scanned, 3 candidates (3 checked), 3 eval-ready tasks"), "{stdout}");
    let tasks = forge_swe::load_instances(&out).unwrap();
    assert_eq!(tasks.len(), 3);
    let expected: Vec<forge_swe::TaskInstance> =
        forge_swe::load_instances(&tasks_dir.join("bundled.jsonl")).unwrap().into_iter().filter(|t| t.repo == "forge/textkit").collect();
    for (got, want) in tasks.iter().zip(&expected) {
        assert_eq!((&got.base_commit, &got.patch, &got.fail_to_pass, &got.pass_to_pass), (&want.base_commit, &want.patch, &want.fail_to_pass, &want.pass_to_pass));
        assert!(got.instance_id.starts_with("forge-test__textkit-"), "{}", got.instance_id);
        // The server answered; the tiny model's text is either taken (then the commit message is
        // kept aside) or refused with a reason — never silently dropped.
        let source = got.extra["problem_statement_source"].as_str().unwrap();
        assert!(source == "rewritten by tiny" || source.starts_with("commit message ("), "{source}");
        assert!(!source.contains("endpoint failed"), "{source}");
        assert!(got.extra["original_problem_statement"].as_str().unwrap().starts_with("Fix: "));
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("mined.report.json")).unwrap()).unwrap();
    assert_eq!(report["tasks"], 3);
    assert_eq!(report["drop_reasons"]["root commit"], 1, "{report}");

    let o = forge(&["tasks", "validate", "--tasks", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("ok ")).count(), 3);

    let out_dir = tmp.path().join("eval");
    let o = forge(&[
        "eval", "swebench", "--dataset", out.to_str().unwrap(), "--predictions", "gold", "--run-id", "mined", "--output-dir", out_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("gold.mined.json")).unwrap()).unwrap();
    assert_eq!((summary["resolved_instances"].as_u64(), summary["error_instances"].as_u64()), (Some(3), Some(0)), "{summary}");
}
