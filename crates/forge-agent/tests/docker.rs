//! The agent in real containers of the bundled tasks, graded by the real harness.
//!
//! Under `CI=true` a missing engine or base image FAILS these tests; elsewhere they are skipped
//! loudly. Every container carries this test's `forge.test` label; none may be left at the end.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use forge_agent::testing::{tool_call_text, ScriptedPolicy};
use forge_agent::*;
use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_sandbox::Runtime;
use forge_swe::{bundled, TaskInstance};
use serde_json::json;

struct Ctx {
    rt: Runtime,
    label: String,
    tasks: Vec<TaskInstance>,
}

async fn ctx(test: &str) -> Option<Ctx> {
    let rt = require_docker(test, &bundled::base_image()).await?;
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir())
        .await
        .unwrap_or_else(|e| panic!("{test}: preparing the bundled tasks failed: {e}"));
    Some(Ctx { rt, label: format!("agent-{test}-{}", std::process::id()), tasks })
}

impl Ctx {
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("forge.test".to_string(), self.label.clone())])
    }

    fn options(&self, root: &std::path::Path, run_id: &str, model: &str, ids: &[String]) -> AgentEvalOptions {
        let mut o = AgentEvalOptions::new(bundled::dataset_path(&bundled::default_tasks_dir()), run_id, model);
        o.output_root = root.to_path_buf();
        o.instance_ids = ids.to_vec();
        o.workers = 4;
        o.test_timeout = Duration::from_secs(120);
        o.labels = self.labels();
        o
    }
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_oracle_resolves_bundled_tasks_through_the_loop_and_finish_only_does_not() {
    let Some(c) = ctx("oracle").await else { return };
    let chat = common::tiny_chat();
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = c.tasks.iter().map(|t| t.instance_id.clone()).collect();

    let oracle = Arc::new(ScriptedPolicy::oracle(chat.clone(), &c.tasks));
    let options = c.options(tmp.path(), "oracle-run", "oracle", &ids);
    let summary = run_agent_eval(oracle.clone(), chat.clone(), &options).await.unwrap();
    assert_eq!(summary.grading.resolved_instances, ids.len(), "{:#?}", summary.grading);
    assert_eq!(summary.episodes_run, ids.len());
    assert_eq!(summary.statuses, BTreeMap::from([("finished".to_string(), ids.len())]));
    assert_eq!(summary.agent_steps, 4 * ids.len());
    let run_dir = options.run_dir();
    let predictions = lines(&run_dir.join("predictions.jsonl"));
    assert_eq!(predictions.len(), ids.len());
    for (p, task) in predictions.iter().zip(&c.tasks) {
        assert_eq!(p["instance_id"], task.instance_id.as_str());
        assert_eq!(p["model_name_or_path"], "oracle");
        // the patch is the repository diff, not the text the oracle sent
        let patch = p["model_patch"].as_str().unwrap();
        assert!(patch.contains("diff --git") && !patch.contains("__pycache__") && !patch.contains(".pyc"), "{patch}");
    }
    for id in &ids {
        let t: Trajectory = serde_json::from_str(&std::fs::read_to_string(run_dir.join(format!("trajectories/{id}.json"))).unwrap()).unwrap();
        assert_eq!(t.status, Status::Finished);
        assert!(t.rendering_matches_tokens, "{id}");
        assert_eq!(t.turns.iter().map(|t| t.call_errors).sum::<usize>(), 0, "{id}");
        let test_run = t.messages.iter().filter(|m| m["role"] == "tool").nth(1).unwrap();
        assert!(test_run["content"].as_str().unwrap().contains("passed"), "{}", test_run["content"]);
    }
    assert_eq!(lines(&run_dir.join("sft.jsonl")).len(), ids.len());
    assert_eq!(lines(&run_dir.join("sft.resolved.jsonl")).len(), ids.len());
    // the trajectories are SFT data as `forge train sft` reads it
    let template = forge_model::chat_template::ChatTemplate::from_model_dir(&common::tiny_dir()).unwrap();
    let tokenizer = forge_model::tokenizer::Tokenizer::from_model_dir(&common::tiny_dir()).unwrap();
    use forge_train::sft::{load_examples, BadExamples, OverLength};
    let (_, stats) = load_examples(&run_dir.join("sft.resolved.jsonl"), &template, &tokenizer, 1 << 20, OverLength::Drop, BadExamples::Error).unwrap();
    assert_eq!(stats.examples, ids.len());

    // Resume: nothing runs again, the grading is reused.
    let again = run_agent_eval(oracle, chat.clone(), &options).await.unwrap();
    assert_eq!((again.episodes_run, again.episodes_reused), (0, ids.len()));
    assert_eq!(again.grading.resolved_instances, ids.len());

    // A policy that only calls finish changes nothing and resolves nothing.
    let finish_only = Arc::new(ScriptedPolicy::finish_only(chat.clone()));
    let some = &ids[..3];
    let summary = run_agent_eval(finish_only, chat, &c.options(tmp.path(), "finish-run", "finish-only", some)).await.unwrap();
    assert_eq!(summary.statuses, BTreeMap::from([("finished".to_string(), 3)]));
    assert_eq!(summary.grading.resolved_instances, 0);
    assert_eq!(summary.grading.empty_patch_instances, 3);
    assert_no_containers_left(&c.rt, &c.label).await;
}

/// The edit oracle on demo tasks given by a split file next to their sources (whose images are
/// built from that directory): one `str_replace` and `finish` per task, every task resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edit_oracle_resolves_demo_tasks_with_one_edit() {
    let Some(c) = ctx("edit-oracle").await else { return };
    let chat = common::tiny_chat();
    let tmp = tempfile::tempdir().unwrap();
    let dataset = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tasks-demo/heldout.jsonl");
    let tasks: Vec<TaskInstance> = forge_swe::load_instances(&dataset).unwrap().into_iter().take(4).collect();
    let ids: Vec<String> = tasks.iter().map(|t| t.instance_id.clone()).collect();
    let oracle = Arc::new(ScriptedPolicy::edit_oracle(chat.clone(), &tasks));
    let mut options = c.options(tmp.path(), "edit-oracle-run", "oracle", &ids);
    options.dataset = dataset;
    let summary = run_agent_eval(oracle, chat, &options).await.unwrap();
    assert_eq!(summary.grading.resolved_instances, ids.len(), "{:#?}", summary.grading);
    assert_eq!(summary.agent_steps, 2 * ids.len());
    for id in &ids {
        let t: Trajectory = serde_json::from_str(&std::fs::read_to_string(options.run_dir().join(format!("trajectories/{id}.json"))).unwrap()).unwrap();
        let edit = &t.messages.iter().find(|m| m["role"] == "assistant").unwrap()["tool_calls"][0]["function"];
        assert_eq!((edit["name"].as_str(), edit["arguments"]["command"].as_str()), (Some("str_replace_editor"), Some("str_replace")), "{id}");
    }
    assert_no_containers_left(&c.rt, &c.label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_turns_then_new_binary_and_edited_files_make_a_patch_that_applies() {
    let Some(c) = ctx("patch").await else { return };
    let chat = common::tiny_chat();
    let task = c.tasks[0].clone();
    let changed = forge_swe::instance::patch_files(&task.patch)[0].clone();
    let turns = [
        "Let me think.".to_string(),
        "<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\"}\n</tool_call>".to_string(),
        tool_call_text(&chat, &[("execute_bash", json!({"command": format!(
            "mkdir -p pkg/new && printf 'x = 1\\n' > pkg/new/mod.py && printf '\\000\\001\\377\\376' > blob.bin && echo '# touched' >> {changed} && python3 -c 'import compileall; compileall.compile_dir(\"pkg\")' >/dev/null && git add -A && git -c user.name=agent -c user.email=agent@example.invalid commit -qm wip"
        )}))]),
        tool_call_text(&chat, &[("execute_bash", json!({"command": "sleep 5", "timeout": 1}))]),
        tool_call_text(&chat, &[("finish", json!({}))]),
    ];
    let policy = ScriptedPolicy::new(chat.clone(), move |_, turn| turns[turn].clone());
    let mut workspace = TaskWorkspace::create(&c.rt, &task, &c.labels()).await.unwrap();
    let t = run_episode(&policy, &mut workspace, &chat, &task.instance_id, &task.problem_statement, &AgentConfig::default()).await;
    workspace.remove().await.unwrap();
    assert_eq!(t.status, Status::Finished, "{:?}", t.error);
    let errors: Vec<usize> = t.turns.iter().map(|t| t.call_errors).collect();
    assert_eq!(errors, [1, 1, 0, 0, 0]);
    let timeout_reply = t.messages.iter().rfind(|m| m["role"] == "tool").unwrap()["content"].as_str().unwrap();
    assert!(timeout_reply.contains("timed out"), "{timeout_reply}");
    assert!(t.patch.contains("GIT binary patch"), "{}", t.patch);
    assert!(t.patch.contains("pkg/new/mod.py") && t.patch.contains(&changed), "{}", t.patch);
    assert!(!t.patch.contains(".pyc"), "{}", t.patch);

    // The patch reproduces the files in a fresh container at the base commit.
    let mut fresh = TaskWorkspace::create(&c.rt, &task, &c.labels()).await.unwrap();
    let apply = tool_call_text(&chat, &[("execute_bash", json!({"command": format!(
        "git apply - <<'__P__'\n{}\n__P__\nod -An -tx1 blob.bin && cat pkg/new/mod.py && tail -n 1 {changed}", t.patch.trim_end())}))]);
    let check = ScriptedPolicy::new(chat.clone(), move |_, turn| if turn == 0 { apply.clone() } else { tool_call_text(&common::tiny_chat(), &[("finish", json!({}))]) });
    let replay = run_episode(&check, &mut fresh, &chat, &task.instance_id, &task.problem_statement, &AgentConfig::default()).await;
    let same_patch = fresh.patch().await.unwrap();
    fresh.remove().await.unwrap();
    let out = replay.messages.iter().find(|m| m["role"] == "tool").unwrap()["content"].as_str().unwrap();
    assert!(out.contains("00 01 ff fe") && out.contains("x = 1") && out.contains("# touched") && out.ends_with("[exit code: 0]"), "{out}");
    assert_eq!(same_patch, t.patch, "the re-applied patch diffs identically");
    assert_no_containers_left(&c.rt, &c.label).await;
}
