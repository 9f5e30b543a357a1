//! `forge_swe::labels` on the bundled task set: the FAIL_TO_PASS tests traced in real containers
//! of the bundled images (built from `forge/base:py3` on first use), and the rubric against a
//! local chat-completions stand-in.
//!
//! Under `CI=true` a missing engine or base image FAILS the Docker test; elsewhere it is skipped
//! with a loud message. Every container carries this test's label; the test checks that none is
//! left at its end.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_swe::chat::ChatEndpoint;
use forge_swe::labels::{label_instances, Distribution, LabelOptions};
use forge_swe::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bundled_fail_to_pass_runs_patched_lines_and_an_unrelated_test_scores_worse() {
    let test = "labels_bundled_coverage";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir())
        .await
        .unwrap_or_else(|e| panic!("{test}: preparing the bundled tasks failed: {e}"));
    assert_eq!(tasks.len(), 36);
    let label = format!("swe-labels-{}", std::process::id());
    let opts = LabelOptions {
        workers: 2,
        timeout: Duration::from_secs(300),
        container_labels: BTreeMap::from([("forge.test".to_string(), label.clone())]),
        ..LabelOptions::default()
    };
    // calutil-1 fixes `is_leap`; a business-day test imports the package (so the module's `def`
    // lines run) but never calls `is_leap`, whose changed `return` line then never runs.
    let leap = tasks.iter().position(|t| t.instance_id == "forge__calutil-1").expect("calutil-1 is bundled");
    let mut unrelated = tasks[leap].clone();
    unrelated.instance_id = "forge__calutil-1-unrelated-test".into();
    unrelated.fail_to_pass = vec!["tests/test_business.py::test_is_business_day".into()];
    let mut all = tasks.clone();
    all.push(unrelated);

    let labels = label_instances(Some(&rt), &all, &opts).await.expect("labelling runs");
    assert_no_containers_left(&rt, &label).await;

    for (t, l) in tasks.iter().zip(&labels) {
        let tv = &l.test_validity;
        let id = &t.instance_id;
        assert_eq!(tv.coverage_error, None, "{id}");
        assert_eq!(tv.coverage_scope.as_deref(), Some("fail_to_pass"), "{id}");
        assert_eq!(tv.fail_to_pass, t.fail_to_pass.len(), "{id}");
        let executable = tv.patched_lines_executable.expect("measured");
        let executed = tv.patched_lines_executed.expect("measured");
        assert!(executed > 0, "{id}: its FAIL_TO_PASS tests ran none of the {executable} executable patched lines");
        assert!(executed <= executable && executable <= tv.patched_lines, "{id}: {tv:?}");
        assert!(tv.score <= 2, "{id}: some patched line ran, so the score is better than 3: {tv:?}");
        assert_eq!(tv.coverage, Some(executed as f64 / executable as f64), "{id}");
        assert!(!l.difficulty.functions.is_empty(), "{id}: every bundled fix is inside a function");
    }
    let original = &labels[leap].test_validity;
    assert_eq!((original.patched_lines_executable, original.patched_lines_executed, original.score), (Some(1), Some(1), 0));
    let bad = &labels.last().unwrap().test_validity;
    assert_eq!((bad.patched_lines_executable, bad.patched_lines_executed, bad.coverage), (Some(1), Some(0), Some(0.0)), "{bad:?}");
    assert_eq!(bad.score, 3);
    assert!(bad.score > original.score);
    // everything but the tests is the same for the constructed instance
    assert_eq!(labels.last().unwrap().difficulty, labels[leap].difficulty);
    eprintln!("{}", Distribution::of(&labels[..tasks.len()]));
}

/// A one-connection HTTP server answering `status` with `body`; returns the request it got.
fn serve_once(status: &'static str, body: String) -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length || n == 0 {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let reply = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        conn.write_all(reply.as_bytes()).unwrap();
        String::from_utf8_lossy(&request).to_string()
    });
    (url, handle)
}

#[tokio::test]
async fn the_rubric_is_asked_the_verified_question_and_combined_with_the_concrete_score() {
    let tasks = load_instances(&bundled::dataset_path(&bundled::default_tasks_dir())).unwrap();
    let inst = tasks.iter().find(|t| t.instance_id == "forge__calutil-1").unwrap().clone();
    let answer = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": "{\"score\": 3, \"reason\": \"vague\"}"}}]});
    let (url, server) = serve_once("200 OK", answer.to_string());
    let opts = LabelOptions {
        coverage: false,
        rubric: Some(ChatEndpoint { api_key: Some("sekrit".into()), ..ChatEndpoint::new(&format!("{url}/v1"), "judge") }),
        ..LabelOptions::default()
    };
    let labels = label_instances(None, std::slice::from_ref(&inst), &opts).await.unwrap();
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /v1/chat/completions "), "{request}");
    assert!(request.to_ascii_lowercase().contains("authorization: bearer sekrit"), "{request}");
    let body: serde_json::Value = serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["model"], "judge");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("How well-specified is the issue text?"));
    assert!(body["messages"][1]["content"].as_str().unwrap().contains(&inst.problem_statement));
    let c = &labels[0].clarity;
    let rubric = c.rubric.as_ref().expect("rubric stored");
    assert_eq!((rubric.score, rubric.model.as_str(), rubric.reason.as_str()), (3, "judge", "vague"));
    // the concrete score of this issue is 0 (names is_leap, calls it with an argument, 37 words):
    // the mean of 0 and 3, rounded up
    assert_eq!(c.score, 2, "{c:?}");
    assert_eq!(labels[0].test_validity.coverage, None, "--coverage off measures nothing");

    // an answer without a score is an error that names the flags
    let answer = serde_json::json!({"choices": [{"message": {"content": "It depends."}}]});
    let (url, first) = serve_once("200 OK", answer.to_string());
    let opts = LabelOptions { coverage: false, rubric: Some(ChatEndpoint::new(&url, "judge")), ..LabelOptions::default() };
    // the retry finds no server: the error names the endpoint and the fix
    let e = label_instances(None, &[inst], &opts).await.unwrap_err().to_string();
    first.join().unwrap();
    assert!(e.contains("/v1/chat/completions") && e.contains("--rubric-endpoint") && e.contains("forge__calutil-1"), "{e}");
}

#[tokio::test]
async fn coverage_without_a_runtime_is_an_error_naming_coverage_off() {
    let tasks = load_instances(&bundled::dataset_path(&bundled::default_tasks_dir())).unwrap();
    let e = label_instances(None, &tasks[..1], &LabelOptions::default()).await.unwrap_err().to_string();
    assert!(e.contains("--coverage off"), "{e}");
}
