//! The agent loop without Docker: a scripted policy against an in-memory workspace. Malformed
//! output, limits, the token-level record and the SFT record.

mod common;

use std::sync::{Arc, Mutex};

use forge_agent::testing::{tool_call_text, ScriptedPolicy};
use forge_agent::*;
use forge_sandbox::{Observation, ToolCall};
use serde_json::{json, Value};

/// Runs nothing: answers every call with its command and remembers the calls.
#[derive(Default)]
struct FakeWorkspace {
    calls: Vec<ToolCall>,
}

impl Workspace for FakeWorkspace {
    async fn call(&mut self, call: &ToolCall) -> forge_sandbox::Result<Observation> {
        self.calls.push(call.clone());
        Ok(Observation {
            output: format!("ran {}", call.arguments["command"].as_str().unwrap_or("?")),
            exit_code: Some(0),
            timed_out: false,
            finished: call.name == forge_sandbox::FINISH,
        })
    }

    async fn patch(&mut self) -> Result<String> {
        Ok(format!("{} calls\n", self.calls.len()))
    }
}

/// Remembers every prompt it is given.
struct Recording<P> {
    inner: P,
    prompts: Mutex<Vec<Vec<u32>>>,
}

impl<P: Policy> Policy for Recording<P> {
    async fn generate(&self, prompt: &[u32], params: &SamplingParams) -> anyhow::Result<Generation> {
        self.prompts.lock().unwrap().push(prompt.to_vec());
        self.inner.generate(prompt, params).await
    }
}

fn bash(chat: &ChatFormat, command: &str) -> String {
    tool_call_text(chat, &[("execute_bash", json!({"command": command}))])
}

fn finish(chat: &ChatFormat) -> String {
    tool_call_text(chat, &[("finish", json!({}))])
}

fn scripted(turns: Vec<String>) -> Recording<ScriptedPolicy> {
    let chat = common::tiny_chat();
    let inner = ScriptedPolicy::new(chat, move |_, turn| turns.get(turn).cloned().unwrap_or_default());
    Recording { inner, prompts: Mutex::new(Vec::new()) }
}

async fn run(policy: &impl Policy, config: &AgentConfig) -> (Trajectory, FakeWorkspace) {
    let chat = common::tiny_chat();
    let mut workspace = FakeWorkspace::default();
    let trajectory = run_episode(policy, &mut workspace, &chat, "demo-1", "The frobnicator crashes on empty input.", config).await;
    (trajectory, workspace)
}

/// The invariants of every token record: aligned vectors, the mask exactly on generated tokens,
/// turn boundaries in order, and the prompts the policy saw are prefixes of the record.
fn check_token_record(t: &Trajectory, prompts: &[Vec<u32>]) {
    let r = &t.tokens;
    assert_eq!(r.input_ids.len(), r.loss_mask.len());
    assert_eq!(r.input_ids.len(), r.logprobs.len());
    let mut expected_mask = vec![0u8; r.len()];
    for turn in &t.turns {
        expected_mask[turn.prompt_len..turn.generated_end].fill(1);
    }
    assert_eq!(r.loss_mask, expected_mask, "mask covers exactly the generated tokens");
    for (i, (&id, &lp)) in r.input_ids.iter().zip(&r.logprobs).enumerate() {
        let expected = if r.loss_mask[i] == 1 { -(id as f32) / 1000.0 } else { 0.0 };
        assert_eq!(lp, expected, "log-prob of token {i}");
    }
    assert_eq!(prompts.len(), t.turns.len());
    for (turn, prompt) in t.turns.iter().zip(prompts) {
        assert_eq!(&r.input_ids[..turn.prompt_len], &prompt[..], "turn prompt is a prefix of the record");
    }
    for pair in t.turns.windows(2) {
        assert!(pair[0].generated_end < pair[1].prompt_len);
    }
}

#[tokio::test]
async fn malformed_output_gets_error_observations_and_the_loop_goes_on() {
    let chat = common::tiny_chat();
    let turns = vec![
        "I will now think about the problem without calling anything.".to_string(),
        "<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\"\n</tool_call>".to_string(),
        "<tool_call>\n{\"name\": \"delete_repo\", \"arguments\": {}}\n</tool_call>".to_string(),
        "<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"cmd\": \"ls\"}}\n</tool_call>".to_string(),
        format!("{}\n<tool_call>\n{{\"name\": \"execute_bash\"}}\n</tool_call>", bash(&chat, "ls")),
        finish(&chat),
    ];
    let policy = scripted(turns);
    let (t, workspace) = run(&policy, &AgentConfig::default()).await;
    assert_eq!(t.status, Status::Finished, "{:?}", t.error);
    assert_eq!(t.turns.len(), 6);
    let names: Vec<&str> = workspace.calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["execute_bash", "finish"], "only well-formed calls reach the tools");
    let errors: Vec<usize> = t.turns.iter().map(|t| t.call_errors).collect();
    assert_eq!(errors, [1, 1, 1, 1, 1, 0]);
    let replies: Vec<&Value> = t.messages.iter().filter(|m| m["role"] != "assistant").skip(2).collect();
    let text = |i: usize| replies[i]["content"].as_str().unwrap().to_string();
    assert_eq!(replies[0]["role"], "user");
    assert!(text(0).contains("did not call a tool") && text(0).contains("<tool_call>"), "{}", text(0));
    assert!(text(1).contains("not valid JSON") && text(1).contains("\"arguments\""), "{}", text(1));
    assert!(text(2).contains("unknown tool \"delete_repo\""), "{}", text(2));
    assert!(text(3).contains("no argument \"cmd\""), "{}", text(3));
    // turn 5: one good call and one bad: both answered, in order
    assert_eq!(text(4), "ran ls\n[exit code: 0]");
    assert!(text(5).contains("requires the argument(s) \"command\""), "{}", text(5));
    assert!(t.rendering_matches_tokens);
    check_token_record(&t, &policy.prompts.lock().unwrap());
    assert_eq!(t.patch, "2 calls\n");
}

#[tokio::test]
async fn the_turn_limit_ends_the_episode() {
    let chat = common::tiny_chat();
    let policy = scripted(vec![bash(&chat, "ls"); 10]);
    let config = AgentConfig { max_turns: 3, ..AgentConfig::default() };
    let (t, workspace) = run(&policy, &config).await;
    assert_eq!(t.status, Status::TurnLimit);
    assert_eq!(t.turns.len(), 3);
    assert_eq!(workspace.calls.len(), 3);
    assert_eq!(t.tool_turns(), 3);
    assert!(t.rendering_matches_tokens, "the record ends with the next generation prompt");
    check_token_record(&t, &policy.prompts.lock().unwrap());
}

#[tokio::test]
async fn the_context_budget_bounds_every_prompt_and_generation() {
    let chat = common::tiny_chat();
    let long = bash(&chat, &"echo hello; ".repeat(40));
    let policy = scripted(vec![long; 50]);
    let prompt = chat.encode(&chat.render(&chat.initial_messages("The frobnicator crashes on empty input."), true).unwrap()).unwrap().len();
    let budget = prompt + 700;
    let config = AgentConfig { max_context_tokens: budget, max_new_tokens: 150, ..AgentConfig::default() };
    let (t, _) = run(&policy, &config).await;
    assert_eq!(t.status, Status::ContextExhausted);
    assert!(t.turns.len() >= 2, "{} turns", t.turns.len());
    for turn in &t.turns {
        assert!(turn.generated_end <= budget, "generation past the budget: {turn:?}");
        assert!(turn.generated_end - turn.prompt_len <= 150);
    }
    // the long call does not fit 150 tokens: every turn is cut, closed for the model, unmasked
    assert!(t.turns.iter().all(|turn| turn.finish_reason == FinishReason::Length));
    let eot = chat.end_of_turn_id();
    for turn in &t.turns {
        assert_eq!(t.tokens.input_ids[turn.generated_end], eot);
        assert_eq!(t.tokens.loss_mask[turn.generated_end], 0);
    }
    assert!(t.rendering_matches_tokens);
    check_token_record(&t, &policy.prompts.lock().unwrap());
}

#[tokio::test]
async fn tokens_decode_to_the_rendered_conversation_and_the_sft_record_encodes_to_them() {
    let chat = common::tiny_chat();
    let turns = vec![
        format!("Let me look first.\n{}", bash(&chat, "grep -rn frobnicate /testbed | head")),
        "no call here".to_string(),
        tool_call_text(&chat, &[("execute_bash", json!({"command": "cat a.py"})), ("str_replace_editor", json!({"command": "view", "path": "/testbed/a.py", "view_range": [1, 5]}))]),
        // not canonical (no spaces): kept as raw text
        "<tool_call>\n{\"name\":\"execute_bash\",\"arguments\":{\"command\":\"ls\"}}\n</tool_call>".to_string(),
        finish(&chat),
    ];
    let policy = scripted(turns);
    let (t, _) = run(&policy, &AgentConfig::default()).await;
    assert_eq!(t.status, Status::Finished);
    check_token_record(&t, &policy.prompts.lock().unwrap());
    let decoded = chat.decode(&t.tokens.input_ids).unwrap();
    let rendered = chat.render(&t.messages, false).unwrap();
    assert_eq!(rendered.trim_end(), decoded);
    assert!(t.rendering_matches_tokens);
    // canonical calls are recorded structured, others as the text the model wrote
    let assistants: Vec<&Value> = t.messages.iter().filter(|m| m["role"] == "assistant").collect();
    assert_eq!(assistants[0]["content"], "Let me look first.");
    assert_eq!(assistants[0]["tool_calls"][0]["function"]["arguments"]["command"], "grep -rn frobnicate /testbed | head");
    assert!(assistants[1].get("tool_calls").is_none());
    assert_eq!(assistants[2]["tool_calls"].as_array().unwrap().len(), 2);
    assert!(assistants[3].get("tool_calls").is_none());
    assert!(assistants[3]["content"].as_str().unwrap().contains("{\"name\":\"execute_bash\""));

    // The SFT record loads through forge-train's loader and encodes to the very same tokens and
    // mask (plus the template's trailing newline after the last turn).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sft.jsonl");
    std::fs::write(&path, format!("{}\n", t.sft_record())).unwrap();
    let template = forge_model::chat_template::ChatTemplate::from_model_dir(&common::tiny_dir()).unwrap();
    let tokenizer = forge_model::tokenizer::Tokenizer::from_model_dir(&common::tiny_dir()).unwrap();
    use forge_train::sft::{load_examples, BadExamples, OverLength};
    let (examples, stats) = load_examples(&path, &template, &tokenizer, 1 << 20, OverLength::Drop, BadExamples::Error).unwrap();
    assert_eq!(stats.examples, 1);
    let example = &examples[0];
    let n = t.tokens.len();
    assert_eq!(&example.input_ids[..n], &t.tokens.input_ids[..]);
    assert!(chat.decode(&example.input_ids[n..]).unwrap().trim().is_empty());
    let sft_mask: Vec<u8> = example.labels[..n].iter().map(|&l| u8::from(l != -100)).collect();
    assert_eq!(sft_mask, t.tokens.loss_mask, "SFT trains on exactly the generated tokens");
}

#[tokio::test]
async fn an_engine_failure_is_an_infrastructure_error() {
    struct Broken;
    impl Policy for Broken {
        async fn generate(&self, _: &[u32], _: &SamplingParams) -> anyhow::Result<Generation> {
            anyhow::bail!("CUDA out of memory")
        }
    }
    let (t, _) = run(&Broken, &AgentConfig::default()).await;
    assert_eq!(t.status, Status::InfraError);
    assert!(!t.status.is_model_outcome());
    assert!(t.error.as_deref().unwrap().contains("CUDA out of memory"));
    // a policy that breaks the contract is one too
    struct Misaligned(Arc<ChatFormat>);
    impl Policy for Misaligned {
        async fn generate(&self, _: &[u32], _: &SamplingParams) -> anyhow::Result<Generation> {
            Ok(Generation { tokens: vec![self.0.end_of_turn_id()], logprobs: vec![], finish_reason: FinishReason::Stop })
        }
    }
    let (t, _) = run(&Misaligned(common::tiny_chat()), &AgentConfig::default()).await;
    assert_eq!(t.status, Status::InfraError);
    assert!(t.error.as_deref().unwrap().contains("0 log-probs"), "{:?}", t.error);
}
