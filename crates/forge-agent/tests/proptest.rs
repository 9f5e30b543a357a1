//! Arbitrary model output never panics the parser or the loop, and the token record stays
//! consistent whatever the model produces.

mod common;

use forge_agent::*;
use forge_sandbox::{Observation, ToolCall};
use proptest::prelude::*;

/// Pieces that make near-miss tool calls likely, mixed with arbitrary text.
fn fragments() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("<tool_call>".to_string()),
        Just("</tool_call>".to_string()),
        Just("<think>".to_string()),
        Just("</think>".to_string()),
        Just("{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\"}}".to_string()),
        Just("{\"name\": \"finish\"".to_string()),
        Just("\"arguments\": ".to_string()),
        Just("{\"name\": \"str_replace_editor\", \"arguments\": {\"command\": \"view\", \"path\": 1}}".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just("<|im_end|>".to_string()),
        Just("é漢🦀".to_string()),
        ".{0,12}",
    ];
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_never_panics(text in fragments()) {
        let tools = forge_sandbox::tool_schemas().as_array().unwrap().clone();
        for call in parse_tool_calls(&text, &tools).into_iter().flatten() {
            prop_assert!(tools.iter().any(|t| t["function"]["name"] == call.name.as_str()));
            prop_assert!(call.arguments.is_object());
        }
    }

    #[test]
    fn the_parser_never_panics_on_any_string(text in any::<String>()) {
        let tools = forge_sandbox::tool_schemas().as_array().unwrap().clone();
        let _ = parse_tool_calls(&text, &tools);
    }
}

struct Echo;

impl Workspace for Echo {
    async fn call(&mut self, call: &ToolCall) -> forge_sandbox::Result<Observation> {
        Ok(Observation { output: call.arguments.to_string(), exit_code: Some(0), timed_out: false, finished: call.name == "finish" })
    }

    async fn patch(&mut self) -> Result<String> {
        Ok(String::new())
    }
}

/// Emits the given token ids turn after turn (any ids of the vocabulary, special tokens included).
struct RandomTokens(Vec<Vec<u32>>, std::sync::Mutex<usize>);

impl Policy for RandomTokens {
    async fn generate(&self, _: &[u32], params: &SamplingParams) -> anyhow::Result<Generation> {
        let mut turn = self.1.lock().unwrap();
        let mut tokens = self.0.get(*turn).cloned().unwrap_or_default();
        *turn += 1;
        tokens.truncate(params.max_new_tokens);
        let logprobs = vec![-1.0; tokens.len()];
        let finish_reason = if tokens.last().is_some_and(|t| params.stop_tokens.contains(t)) { FinishReason::Stop } else { FinishReason::Length };
        Ok(Generation { tokens, logprobs, finish_reason })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_loop_never_panics_and_keeps_its_record_consistent(
        turns in prop::collection::vec(prop::collection::vec(0u32..512, 0..60), 1..6),
        texts in prop::collection::vec(fragments(), 0..4),
        budget in 200usize..3000,
    ) {
        let chat = common::tiny_chat();
        let eot = chat.end_of_turn_id();
        // half random ids, half tokenised near-miss text ending with the end-of-turn token
        let mut outputs = turns;
        for text in &texts {
            let mut ids = chat.encode(text).unwrap();
            ids.push(eot);
            outputs.push(ids);
        }
        let policy = RandomTokens(outputs, std::sync::Mutex::new(0));
        let config = AgentConfig { max_turns: 8, max_context_tokens: budget, max_new_tokens: 64, ..AgentConfig::default() };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let t = rt.block_on(run_episode(&policy, &mut Echo, &chat, "p-1", "fix it", &config));
        prop_assert!(t.status.is_model_outcome(), "{:?}", t.error);
        // the tiny template renders the history as generated: one record, never restarted, even
        // for random token sequences that re-tokenise differently
        prop_assert!(t.earlier_tokens.is_empty());
        let r = &t.tokens;
        prop_assert_eq!(r.input_ids.len(), r.loss_mask.len());
        prop_assert_eq!(r.input_ids.len(), r.logprobs.len());
        let generated: usize = t.turns.iter().map(|turn| turn.generated_end - turn.prompt_len).sum();
        prop_assert_eq!(r.loss_mask.iter().filter(|&&m| m == 1).count(), generated);
        for turn in &t.turns {
            prop_assert!(turn.generated_end <= budget);
        }
    }
}
