//! What a policy's own commands do to its sandbox is the policy's doing: rollouts whose commands
//! kill the container's main process, write past the storage limit, or keep working past the
//! episode's wall clock are scored 0 with their cause recorded — never excluded as
//! infrastructure failures (a failing policy must not learn that crashing escapes its zero).
//! An editor `view` of `/proc/self/...` (a path that vanishes before the engine's archive API
//! reads it: a 404) is an observation, not an error.
//!
//! The other side: a sandbox whose Docker engine died under it is the infrastructure's failure,
//! excluded from its group and counted, never a score.
//!
//! Real containers of a bundled task. Under `CI=true` a missing engine or base image FAILS this
//! test; elsewhere it is skipped loudly. Every container carries the test's `forge.test` label;
//! none may be left at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use forge_agent::testing::{tool_call_text, ScriptedPolicy};
use forge_agent::{ChatFormat, FailureCause, Status};
use forge_rl::config::AgentSection;
use forge_rl::{roll_out, select_samples, FinishedGroup, Reward, Rollout, RolloutEnv, RolloutJob};
use forge_sandbox::testing::{assert_no_containers_left, require_docker, SecondEngine};
use forge_sandbox::{EngineSpec, Fleet, FleetOptions, Limits, Runtime, EXECUTE_BASH, FINISH, STR_REPLACE_EDITOR};
use forge_swe::{bundled, ExecOptions, TaskInstance};
use forge_rl::grpo::AdvantageNorm;
use serde_json::json;

fn tiny_chat() -> Arc<ChatFormat> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/tiny-tokenizer");
    Arc::new(ChatFormat::from_model_dir(&dir, serde_json::Value::Null).expect("tiny tokenizer loads"))
}

/// One rollout of `instance` by a policy that plays `turns` (then repeats the last one).
async fn rollout(rt: &Runtime, labels: &BTreeMap<String, String>, instance: &Arc<TaskInstance>, agent: AgentSection, turns: Vec<String>, sample: usize) -> Rollout {
    rollout_on(Fleet::of(rt.clone()), labels.clone(), instance.clone(), agent, turns, sample).await
}

/// [`rollout`] on the engines of `fleet`.
async fn rollout_on(fleet: Fleet, labels: BTreeMap<String, String>, instance: Arc<TaskInstance>, agent: AgentSection, turns: Vec<String>, sample: usize) -> Rollout {
    let chat = tiny_chat();
    let policy = ScriptedPolicy::new(chat.clone(), move |_, turn| turns[turn.min(turns.len() - 1)].clone());
    let env = RolloutEnv {
        fleet,
        policy: Arc::new(policy),
        chat,
        agent,
        grading: ExecOptions { timeout: std::time::Duration::from_secs(120), ..ExecOptions::default() },
        labels,
        policy_version: Arc::new(AtomicU64::new(0)),
    };
    roll_out(&env, RolloutJob { group: 0, sample, instance, seed: 1 }).await
}

fn bash(chat: &ChatFormat, command: &str) -> String {
    tool_call_text(chat, &[(EXECUTE_BASH, json!({"command": command}))])
}

fn assert_policy_failure(r: &Rollout, cause: FailureCause) {
    let t = &r.trajectory;
    assert_eq!(t.status, Status::PolicyFailure, "{:?}: {:?}", t.cause, t.error);
    assert_eq!(t.cause, Some(cause), "{:?}", t.error);
    assert_eq!(r.reward, Reward::Scored(0.0), "scored 0, not excluded: {:?}", r.reward);
    assert!(t.status.is_model_outcome());
    assert!(t.patch.is_empty());
    // trainable: the turns that led there are recorded with their generated tokens
    assert!(!t.turns.is_empty() && t.token_records().any(|rec| rec.loss_mask.contains(&1)), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_that_kills_its_container_fills_its_disk_or_loops_past_the_wall_clock_is_scored_zero_with_its_cause() {
    let test = "rl-policy-failures";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir()).await.unwrap();
    let instance = Arc::new(tasks[0].clone());
    let label = format!("{test}-{}", std::process::id());
    let labels = BTreeMap::from([("forge.test".to_string(), label.clone())]);
    let chat = tiny_chat();
    let agent = AgentSection { max_turns: 6, ..AgentSection::default() };

    // (a) the container's main process (PID 1's child: `sleep infinity` under tini) killed
    let kill = rollout(&rt, &labels, &instance, agent.clone(), vec![bash(&chat, "kill -9 $(cat /proc/1/task/1/children)")], 0);
    // (b) 64 MiB written under a 16 MiB storage limit
    let small_disk = AgentSection { storage_limit_mb: 16, ..agent.clone() };
    let fill = rollout(&rt, &labels, &instance, small_disk, vec![bash(&chat, "head -c 64M /dev/zero > /tmp/fill && ls -l /tmp/fill")], 1);
    // (c) a 2 s command every turn under a 3 s wall clock
    let short_clock = AgentSection { max_episode_s: 3, ..agent.clone() };
    let started = Instant::now();
    let slow = rollout(&rt, &labels, &instance, short_clock, vec![bash(&chat, "sleep 2")], 2);
    // control: viewing /proc/self/status is answered, the episode goes on to `finish`
    let view = tool_call_text(&chat, &[(STR_REPLACE_EDITOR, json!({"command": "view", "path": "/proc/self/status"}))]);
    let finish = tool_call_text(&chat, &[(FINISH, json!({"message": "done"}))]);
    let control = rollout(&rt, &labels, &instance, agent.clone(), vec![view, finish], 3);
    let (kill, fill, slow, control) = tokio::join!(kill, fill, slow, control);
    let slow_seconds = started.elapsed().as_secs_f64();

    assert_policy_failure(&kill, FailureCause::ContainerExited);
    assert_policy_failure(&fill, FailureCause::DiskQuotaExceeded);
    assert!(fill.trajectory.error.as_deref().is_some_and(|e| e.contains("disk quota exceeded")), "{:?}", fill.trajectory.error);
    assert_policy_failure(&slow, FailureCause::WallClock);
    assert!(slow.trajectory.turns.len() <= 3, "the wall clock stopped the loop: {} turns", slow.trajectory.turns.len());
    assert!(slow_seconds < 120.0, "{slow_seconds} s");

    assert_eq!(control.trajectory.status, Status::Finished, "{:?}", control.trajectory.error);
    assert_eq!(control.reward, Reward::Scored(0.0));
    let observation = control.trajectory.messages.iter().find(|m| m["role"] == "tool").expect("the view was answered");
    let text = observation["content"].as_str().unwrap_or_default();
    assert!(text.contains("/proc/self/status"), "{observation}");

    // none of them is excluded from the group as an infrastructure failure
    let group = FinishedGroup { group: 0, instance_id: instance.instance_id.clone(), rollouts: vec![kill, fill, slow, control] };
    let (_, counts) = select_samples(std::slice::from_ref(&group), 0, 1, AdvantageNorm::MeanStd, 1e-4);
    assert_eq!(counts.infrastructure_failures, 0, "{counts:?}");
    assert_eq!(counts.skipped_too_few, 0, "all four samples stay in the group: {counts:?}");
    assert_no_containers_left(&rt, &label).await;
}

/// A policy whose patch would change how the tests run (a conftest.py forcing passes) or whose
/// code reaches into the runner (`os._exit` after printing passes) gets 0 with the refusal as
/// its grading note — the grader never runs its tests — and stays in its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_that_hacks_the_grader_is_refused_and_scored_zero() {
    let test = "rl-reward-hacks";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir()).await.unwrap();
    let instance = Arc::new(tasks[0].clone());
    let package = instance.repo.trim_start_matches("forge/").to_string();
    let label = format!("{test}-{}", std::process::id());
    let labels = BTreeMap::from([("forge.test".to_string(), label.clone())]);
    let chat = tiny_chat();
    let agent = AgentSection { max_turns: 4, ..AgentSection::default() };
    let finish = tool_call_text(&chat, &[(FINISH, json!({"message": "done"}))]);
    let conftest = "printf 'import pytest\\n@pytest.hookimpl(hookwrapper=True)\\ndef pytest_runtest_makereport(item, call):\\n    (yield).get_result().outcome = \"passed\"\\n' > conftest.py";
    let exit = format!("printf 'import os\\nprint(\"PASSED\")\\nos._exit(0)\\n' >> {package}/__init__.py");
    let (conftest, exit) = tokio::join!(
        rollout(&rt, &labels, &instance, agent.clone(), vec![bash(&chat, conftest), finish.clone()], 0),
        rollout(&rt, &labels, &instance, agent.clone(), vec![bash(&chat, &exit), finish], 1),
    );
    for (r, prefix) in [(&conftest, forge_swe::integrity::PATCH_REFUSED), (&exit, forge_swe::integrity::SUSPECTED_REWARD_HACK)] {
        assert_eq!(r.trajectory.status, Status::Finished, "{:?}", r.trajectory.error);
        assert!(!r.trajectory.patch.is_empty());
        assert_eq!(r.reward, Reward::Scored(0.0), "{:?}", r.grading_note);
        assert!(r.grading_note.as_deref().is_some_and(|n| n.starts_with(prefix)), "{:?}", r.grading_note);
    }
    let group = FinishedGroup { group: 0, instance_id: instance.instance_id.clone(), rollouts: vec![conftest, exit] };
    let (_, counts) = select_samples(std::slice::from_ref(&group), 0, 1, AdvantageNorm::MeanStd, 1e-4);
    assert_eq!((counts.infrastructure_failures, counts.skipped_too_few), (0, 0), "{counts:?}");
    assert_no_containers_left(&rt, &label).await;
}

/// An episode whose Docker engine dies under it (its host gone mid-command) is excluded from its
/// group as an infrastructure failure and counted, never scored: the engine is marked down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_episode_whose_engine_dies_is_excluded_and_counted_not_scored() {
    let test = "rl-engine-lost";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir()).await.unwrap();
    let instance = Arc::new(tasks[0].clone());
    let image = instance.image.clone().unwrap();
    let tmp = tempfile::Builder::new().prefix("forge-rl-fleet-").tempdir_in("/tmp").unwrap();
    let Some(second) = SecondEngine::start(test, &tmp.path().join("engine2")) else { return };
    let label = format!("{test}-{}", std::process::id());
    let labels = BTreeMap::from([("forge.test".to_string(), label.clone())]);
    // the local engine has the image and room for one, which a reservation holds: the episode
    // goes to the second engine, which gets the image from the first
    let local = EngineSpec { max_containers: Some(1), ..EngineSpec::new(rt.endpoint()).unwrap() };
    let fleet = Fleet::connect(&[local, second.spec(4)], FleetOptions::default()).await.unwrap();
    let held = fleet.place(&image, &Limits::default(), forge_sandbox::PullPolicy::Never).await.unwrap();
    let chat = tiny_chat();
    let agent = AgentSection { max_turns: 4, ..AgentSection::default() };
    let episode = tokio::spawn(rollout_on(fleet.clone(), labels, instance.clone(), agent, vec![bash(&chat, "sleep 120")], 0));
    let started = Instant::now();
    while second.sandboxes().is_empty() {
        assert!(started.elapsed().as_secs() < 180 && !episode.is_finished(), "no container ran on the second engine");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // the agent's `sleep 120` is running when the engine dies
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    second.kill();
    let lost = episode.await.unwrap();
    assert!(started.elapsed().as_secs() < 100, "the loss ended the episode at once, not its command");
    assert_eq!(lost.trajectory.status, Status::InfraError, "{:?}", lost.trajectory.error);
    assert!(matches!(lost.reward, Reward::InfrastructureFailure(_)), "{:?}", lost.reward);
    let m = fleet.metrics();
    assert_eq!((m.engines[1].up, m.engines[1].failures, m.engines[1].image_transfers), (false, 1, 1), "{m:?}");
    let group = FinishedGroup { group: 0, instance_id: instance.instance_id.clone(), rollouts: vec![lost] };
    let (samples, counts) = select_samples(std::slice::from_ref(&group), 0, 1, AdvantageNorm::MeanStd, 1e-4);
    assert_eq!((samples.len(), counts.infrastructure_failures), (0, 1), "{counts:?}");
    drop(held);
    assert_no_containers_left(&rt, &label).await;
}
