//! The harness against the real Docker Engine, real containers and real pytest, on the bundled
//! task set (images built from `forge/base:py3` on first use).
//!
//! Under `CI=true` a missing engine or base image FAILS the test; elsewhere the test is skipped
//! with a loud message. Every container carries this test's label; each test checks that none is
//! left at its end.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_sandbox::Runtime;
use forge_swe::harness::{run_instance, ExecOptions, Outcome};
use forge_swe::*;

struct Ctx {
    rt: Runtime,
    label: String,
    tasks: Vec<TaskInstance>,
}

impl Ctx {
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("forge.test".to_string(), self.label.clone())])
    }

    fn exec_opts(&self, version: GradingVersion) -> ExecOptions {
        ExecOptions {
            timeout: Duration::from_secs(120),
            version,
            labels: self.labels(),
            ..ExecOptions::default()
        }
    }

    fn task(&self, id: &str) -> TaskInstance {
        self.tasks
            .iter()
            .find(|t| t.instance_id == id)
            .cloned()
            .unwrap()
    }

    async fn assert_no_leak(&self) {
        assert_no_containers_left(&self.rt, &self.label).await;
    }
}

async fn ctx(test: &str) -> Option<Ctx> {
    let rt = require_docker(test, &bundled::base_image()).await?;
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir())
        .await
        .unwrap_or_else(|e| panic!("{test}: preparing the bundled tasks failed: {e}"));
    Some(Ctx {
        rt,
        label: format!("swe-{test}-{}", std::process::id()),
        tasks,
    })
}

fn eval_opts(c: &Ctx, root: &Path, preds: PredictionsSource, run_id: &str) -> EvalOptions {
    let mut o = EvalOptions::new(
        bundled::dataset_path(&bundled::default_tasks_dir()),
        preds,
        run_id,
    );
    o.output_root = root.to_path_buf();
    o.workers = 4;
    o.timeout = Duration::from_secs(120);
    o.labels = c.labels();
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gold_resolves_every_bundled_task_with_official_layout_resume_and_regrade() {
    let Some(c) = ctx("gold").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = eval_opts(&c, tmp.path(), PredictionsSource::Gold, "gold-run");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    opts.progress = Some(std::sync::Arc::new(
        move |r: &InstanceResult, done, total| {
            seen2
                .lock()
                .unwrap()
                .push((r.instance_id.clone(), done, total));
        },
    ));
    let s = run_evaluation(&opts).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), c.tasks.len());
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|(_, _, t)| *t == c.tasks.len()));
    assert_eq!(s.error_ids, Vec::<String>::new(), "{:?}", s.errors);
    assert_eq!(s.resolved_instances, c.tasks.len(), "{s:?}");
    assert!(c.tasks.len() >= 12);
    assert_eq!(s.submitted_instances, c.tasks.len());
    assert_eq!(s.completed_instances, c.tasks.len());
    assert_eq!(s.summary_path, tmp.path().join("gold.gold-run.json"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.summary_path).unwrap()).unwrap();
    assert_eq!(summary["resolved_instances"], c.tasks.len());
    assert_eq!(summary["schema_version"], 2);
    let model_dir = tmp.path().join("logs/run_evaluation/gold-run/gold");
    for t in &c.tasks {
        let d = model_dir.join(&t.instance_id);
        for f in ["patch.diff", "eval.sh", "test_output.txt", "report.json"] {
            assert!(d.join(f).is_file(), "{} lacks {f}", t.instance_id);
        }
        let rep: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
        assert_eq!(rep[&t.instance_id]["resolved"], true);
        assert_eq!(
            std::fs::read_to_string(d.join("patch.diff")).unwrap(),
            t.patch
        );
        let log = std::fs::read_to_string(d.join("test_output.txt")).unwrap();
        assert!(
            log.contains(grading::START_TEST_OUTPUT) && log.contains("passed"),
            "{log}"
        );
    }
    eprintln!(
        "gold: {} instances in {:.1} s with 4 workers",
        c.tasks.len(),
        s.wall_seconds
    );

    // Resume: every instance has a report, nothing runs again.
    let again = run_evaluation(&opts).await.unwrap();
    assert_eq!(again.resolved_instances, c.tasks.len());
    assert!(
        again.wall_seconds < 5.0,
        "resume re-ran instances: {:.1} s",
        again.wall_seconds
    );
    // A deleted report makes exactly that instance run again.
    let first = &c.tasks[0].instance_id;
    std::fs::remove_file(model_dir.join(first).join("report.json")).unwrap();
    let again = run_evaluation(&opts).await.unwrap();
    assert_eq!(again.resolved_instances, c.tasks.len());
    assert!(model_dir.join(first).join("report.json").is_file());

    // Regrade without Docker, both semantics.
    for v in [GradingVersion::V4, GradingVersion::V5] {
        let r = regrade(&opts.dataset, &model_dir, "gold-run", v).unwrap();
        assert_eq!(r.resolved_instances, c.tasks.len(), "{v:?}");
        assert_eq!(r.summary_path, tmp.path().join("gold.gold-run.json"));
    }
    c.assert_no_leak().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_wrong_and_unappliable_patches_are_not_resolved() {
    let Some(c) = ctx("wrong").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = c
        .tasks
        .iter()
        .take(4)
        .map(|t| t.instance_id.clone())
        .collect();
    let wrong = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# calutil\n+# calutil (patched)\n";
    let garbage = "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -10,3 +10,3 @@\n-this line\n+is not there\n context\n";
    let preds = serde_json::json!([
        {"instance_id": ids[0], "model_name_or_path": "org/model", "model_patch": ""},
        {"instance_id": ids[1], "model_name_or_path": "org/model", "model_patch": wrong},
        {"instance_id": ids[2], "model_name_or_path": "org/model", "model_patch": garbage},
        {"instance_id": ids[3], "model_name_or_path": "org/model", "model_patch": null},
    ]);
    let pf = tmp.path().join("preds.json");
    std::fs::write(&pf, preds.to_string()).unwrap();
    let mut opts = eval_opts(&c, tmp.path(), PredictionsSource::File(pf), "bad");
    opts.instance_ids = ids.clone();
    let s = run_evaluation(&opts).await.unwrap();
    assert_eq!(s.resolved_instances, 0, "{s:?}");
    assert_eq!(s.empty_patch_ids, vec![ids[0].clone(), ids[3].clone()]);
    assert_eq!(s.unresolved_ids, vec![ids[1].clone()]);
    assert_eq!(s.error_ids, vec![ids[2].clone()]);
    assert!(
        s.errors[&ids[2]].contains("could not be applied"),
        "{:?}",
        s.errors
    );
    assert_eq!(s.summary_path, tmp.path().join("org__model.bad.json"));
    let d = tmp.path().join("logs/run_evaluation/bad/org__model");
    let rep: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join(&ids[1]).join("report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rep[&ids[1]]["patch_successfully_applied"], true);
    assert_eq!(rep[&ids[1]]["resolved"], false);
    // the F2P tests really ran and failed
    let f2p = &rep[&ids[1]]["tests_status"]["FAIL_TO_PASS"];
    assert!(
        f2p["success"].as_array().unwrap().is_empty()
            && !f2p["failure"].as_array().unwrap().is_empty()
    );
    // an error gets no report (so a resumed run retries it) but a reason and the log
    assert!(!d.join(&ids[2]).join("report.json").exists());
    let log = std::fs::read_to_string(d.join(&ids[2]).join("test_output.txt")).unwrap();
    assert!(log.contains(grading::APPLY_PATCH_FAIL), "{log}");
    c.assert_no_leak().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bundled_task_is_eval_ready() {
    let Some(c) = ctx("validate").await else {
        return;
    };
    let res = validate_tasks(&c.rt, &c.tasks, &c.exec_opts(GradingVersion::V4), 2).await;
    assert_eq!(res.len(), c.tasks.len());
    let bad: Vec<_> = res.iter().filter(|v| !v.ok).collect();
    assert!(bad.is_empty(), "{bad:#?}");
    c.assert_no_leak().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_failures_are_errors_not_unresolved() {
    let Some(c) = ctx("infra").await else { return };
    let mut t = c.task("forge__textkit-1");
    t.image = Some("forge-swe/no-such-image:v0".into());
    let run = run_instance(&c.rt, &t, Some(&t.patch), &c.exec_opts(GradingVersion::V4))
        .await
        .unwrap();
    match &run.outcome {
        Outcome::Error { reason } => assert!(reason.contains("image missing"), "{reason}"),
        o => panic!("expected an error, got {o:?}"),
    }
    // A hung test suite: killed at the timeout, recorded as an error.
    let mut t = c.task("forge__textkit-1");
    t.test_cmd = Some("sleep 60; pytest".into());
    let mut opts = c.exec_opts(GradingVersion::V4);
    opts.timeout = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let run = run_instance(&c.rt, &t, Some(&t.patch), &opts)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    match &run.outcome {
        Outcome::Error { reason } => assert!(reason.contains("timed out"), "{reason}"),
        o => panic!("expected a timeout error, got {o:?}"),
    }
    assert!(run.log.contains(grading::TESTS_TIMEOUT));
    // The container dies under the tests (its init is killed, as code under test can do): the
    // patch's doing, scored 0 with the cause — never excluded as infrastructure.
    let mut t = c.task("forge__textkit-1");
    t.test_cmd = Some("kill -TERM 1; sleep 20; pytest".into());
    let run = run_instance(&c.rt, &t, Some(&t.patch), &c.exec_opts(GradingVersion::V4))
        .await
        .unwrap();
    match &run.outcome {
        Outcome::Error { reason } => assert!(reason.contains("container stopped"), "{reason}"),
        o => panic!("expected a container error, got {o:?}\n{}", run.log),
    }
    assert_eq!(run.outcome.infrastructure_failure(), None, "a killed container is the policy's doing");
    // Shared images hold later fixes in their history: the agent setup removes them.
    let t = c.task("forge__calutil-1");
    let spec = forge_sandbox::SandboxSpec::new(t.image.clone().unwrap())
        .workdir("/testbed")
        .label("forge.test", &c.label);
    let mut sb = c.rt.create(&spec).await.unwrap();
    let head = sb
        .exec(&["git", "-C", "/testbed", "rev-parse", "HEAD"], None)
        .await
        .unwrap();
    let head = head.output.trim().to_string();
    assert_ne!(head, t.base_commit);
    let o = sb
        .exec(
            &["bash", "-c", &harness::agent_setup_script(&t)],
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(o.exit_code, Some(0), "{}", o.output);
    let o = sb
        .exec(&["bash", "-c", &format!("cd /testbed && git rev-parse HEAD && git log --all --format=%H | wc -l && git cat-file -e {head} && echo LEAK")], None)
        .await
        .unwrap();
    assert!(o.output.starts_with(&t.base_commit), "{}", o.output);
    assert!(
        !o.output.contains("LEAK"),
        "later commit still reachable: {}",
        o.output
    );
    assert_eq!(o.output.lines().nth(1), Some("1"), "{}", o.output);
    sb.remove().await.unwrap();
    // Several instances share one image; the image adds little to the base.
    let runtime = bundled::ensure_runtime_base(&c.rt).await.unwrap();
    let base = c.rt.image_info(&runtime).await.unwrap().size_bytes;
    let mut images: BTreeMap<String, usize> = BTreeMap::new();
    for t in &c.tasks {
        *images.entry(t.image.clone().unwrap()).or_default() += 1;
    }
    for (img, n) in &images {
        let size = c.rt.image_info(img).await.unwrap().size_bytes;
        let delta = size - base;
        eprintln!("{img}: {n} instances, {delta} bytes over the shared runtime image");
        assert!(*n >= 2);
        assert!(delta < 2 << 20, "{img} adds {delta} bytes");
    }
    c.assert_no_leak().await;
}
