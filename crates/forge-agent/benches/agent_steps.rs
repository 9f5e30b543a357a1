//! Agent steps (tool-call turns) per second on the bundled tasks with the scripted gold-patch
//! oracle, 1 and 4 concurrent agents, through the real loop and real containers (container start
//! and repository setup, the tool calls, the patch, removal all included), side by side with a
//! reference scaffold that drives the same commands through the `docker` CLI, one subprocess per
//! call (how stock scaffolds without a runtime library talk to containers).
//!
//! `cargo bench --profile dev -p forge-agent --bench agent_steps` (needs Docker and forge/base:py3;
//! the bundled task images are built on first use). Results: benches/results/agent.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use forge_agent::testing::{oracle_turns, ScriptedPolicy};
use forge_agent::{parse_tool_calls, run_episode, AgentConfig, ChatFormat, TaskWorkspace};
use forge_sandbox::testing::require_docker;
use forge_swe::{agent_setup_script, bundled, TaskInstance};

const ROUNDS: usize = 2;

fn label() -> String {
    format!("agent-bench-{}", std::process::id())
}

/// (steps, seconds) for all tasks with `concurrency` agents through forge-agent.
async fn forge_agents(rt: &forge_sandbox::Runtime, chat: &Arc<ChatFormat>, tasks: &[TaskInstance], concurrency: usize) -> (usize, f64) {
    let policy = Arc::new(ScriptedPolicy::oracle(chat.clone(), tasks));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let labels = BTreeMap::from([("forge.test".to_string(), label())]);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in tasks.iter().cloned() {
        let (rt, chat, policy, semaphore, labels) = (rt.clone(), chat.clone(), policy.clone(), semaphore.clone(), labels.clone());
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await.unwrap();
            let mut workspace = TaskWorkspace::create(&rt, &task, &labels).await.unwrap();
            let t = run_episode(&*policy, &mut workspace, &chat, &task.instance_id, &task.problem_statement, &AgentConfig::default()).await;
            workspace.remove().await.unwrap();
            assert!(t.status.is_model_outcome() && !t.patch.is_empty(), "{:?}", t.error);
            t.tool_turns()
        });
    }
    let mut steps = 0;
    while let Some(r) = set.join_next().await {
        steps += r.unwrap();
    }
    (steps, started.elapsed().as_secs_f64())
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reference: the same oracle commands, one `docker` CLI process per call (editor views as
/// `sed -n`), the patch with `docker exec git diff`.
fn reference_agent(chat: &ChatFormat, task: &TaskInstance) -> usize {
    let image = task.image.as_deref().unwrap();
    let label = format!("forge.test={}", label());
    let id = docker(&["run", "-d", "--init", "--network", "none", "--label", &label, "--label", "forge.sandbox=1", "-w", "/testbed", image, "sleep", "infinity"]);
    let id = id.trim();
    docker(&["exec", id, "bash", "-c", &agent_setup_script(task)]);
    let mut steps = 0;
    for turn in oracle_turns(chat, task) {
        for call in parse_tool_calls(&turn, chat.tools()).into_iter().flatten() {
            let command = match call.name.as_str() {
                "execute_bash" => call.arguments["command"].as_str().unwrap().to_string(),
                "str_replace_editor" => format!("cat -n {} | sed -n 1,10p", call.arguments["path"].as_str().unwrap()),
                _ => continue,
            };
            docker(&["exec", "-w", "/testbed", id, "bash", "-c", &command]);
            steps += 1;
        }
    }
    let patch = docker(&["exec", "-w", "/testbed", id, "bash", "-c", &format!("git add -A && git diff --cached --binary {}", task.base_commit)]);
    assert!(patch.contains("diff --git"));
    docker(&["rm", "-f", id]);
    steps + 1 // finish
}

async fn reference_agents(chat: &Arc<ChatFormat>, tasks: &[TaskInstance], concurrency: usize) -> (usize, f64) {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in tasks {
        let (chat, semaphore, task) = (chat.clone(), semaphore.clone(), task.clone());
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await.unwrap();
            tokio::task::spawn_blocking(move || reference_agent(&chat, &task)).await.unwrap()
        });
    }
    let mut steps = 0;
    while let Some(r) = set.join_next().await {
        steps += r.unwrap();
    }
    (steps, started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let Some(rt) = require_docker("agent_steps bench", &bundled::base_image()).await else { return };
    let tasks = bundled::prepare(&rt, &bundled::default_tasks_dir()).await.expect("bundled tasks");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/tiny-tokenizer");
    let chat = Arc::new(ChatFormat::from_model_dir(&dir, serde_json::Value::Null).unwrap());
    println!("{} bundled tasks, oracle policy (4 tool-call turns each), {ROUNDS} rounds, best round reported\n", tasks.len());
    println!("| concurrent agents | forge-agent steps/s | docker CLI reference steps/s | ratio |");
    println!("|---|---|---|---|");
    for concurrency in [1, 4] {
        let (mut ours, mut reference) = (0.0f64, 0.0f64);
        for _ in 0..ROUNDS {
            let (steps, secs) = forge_agents(&rt, &chat, &tasks, concurrency).await;
            ours = ours.max(steps as f64 / secs);
            let (steps, secs) = reference_agents(&chat, &tasks, concurrency).await;
            reference = reference.max(steps as f64 / secs);
        }
        println!("| {concurrency} | {ours:.2} | {reference:.2} | {:.2}× |", ours / reference);
    }
    let left = rt.list_sandboxes(Some(("forge.test", &label()))).await.unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
}
