//! What the agent is told: the system prompt, the task instruction, and the messages that answer
//! a turn (observations, and the reminders for turns that misuse the tools).

use std::str::FromStr;

use forge_sandbox::{Observation, EXECUTE_BASH};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::parse::{signatures, TOOL_CALL_CLOSE, TOOL_CALL_OPEN};

/// What the agent is told and which tools it is shown. The trajectories a model is fine-tuned on
/// and the episodes it is evaluated or trained by RL in must use the same scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaffold {
    /// The SWE-agent / OpenHands-style agent: a system prompt on how to work, a step-by-step task
    /// instruction, and the tools `execute_bash`, `str_replace_editor` and `finish`.
    #[default]
    Standard,
    /// One-sentence prompts, the issue alone, and terse schemas of `str_replace_editor` and
    /// `finish`: prompts an order of magnitude shorter, for tiny models (the demo curriculum).
    Minimal,
}

impl Scaffold {
    pub const NAMES: &'static str = "standard, minimal";

    /// The tool schemas shown to the model (the sandbox runs every tool whatever it was shown).
    pub fn tools(self) -> Vec<Value> {
        let schemas = match self {
            Scaffold::Standard => forge_sandbox::tool_schemas(),
            Scaffold::Minimal => forge_sandbox::minimal_tool_schemas(),
        };
        schemas.as_array().cloned().unwrap_or_default()
    }

    pub fn system_prompt(self) -> &'static str {
        match self {
            Scaffold::Standard => STANDARD_SYSTEM_PROMPT,
            Scaffold::Minimal => "Fix the issue in the repository at /testbed, then call `finish`.",
        }
    }

    /// The first user message: the issue and how to work on it.
    pub fn task_instruction(self, problem_statement: &str) -> String {
        let issue = problem_statement.trim();
        match self {
            Scaffold::Standard => format!(
                "The repository at /testbed (a git checkout) has the following issue:\n\n\
                 <issue>\n{issue}\n</issue>\n\n\
                 Change the non-test source files under /testbed so that the issue is resolved. Tests that \
                 check the fix already exist elsewhere and will be run on your changes; you may write \
                 scripts to reproduce the problem, but leave the repository's test files as they are.\n\
                 Suggested steps: 1. explore the repository to find the code involved; 2. write and run a \
                 small script that reproduces the problem; 3. edit the source to fix it; 4. rerun your \
                 script and the related tests; 5. think about edge cases; 6. call `finish`."
            ),
            Scaffold::Minimal => format!("<issue>\n{issue}\n</issue>"),
        }
    }

    /// The conversation an episode starts from.
    pub fn initial_messages(self, problem_statement: &str) -> Vec<Value> {
        self.initial_messages_with(problem_statement, None)
    }

    /// [`Scaffold::initial_messages`] with the task's environment described after the
    /// instruction (the standard scaffold): where the repository is, that its environment is
    /// active, how its tests run ([`Workspace::environment_note`](crate::Workspace::environment_note)).
    pub fn initial_messages_with(self, problem_statement: &str, environment: Option<&str>) -> Vec<Value> {
        let mut instruction = self.task_instruction(problem_statement);
        if let (Scaffold::Standard, Some(note)) = (self, environment) {
            instruction.push_str("\n\n");
            instruction.push_str(note.trim());
        }
        vec![
            json!({"role": "system", "content": self.system_prompt()}),
            json!({"role": "user", "content": instruction}),
        ]
    }
}

impl FromStr for Scaffold {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "standard" => Ok(Scaffold::Standard),
            "minimal" => Ok(Scaffold::Minimal),
            other => Err(format!("unknown scaffold {other:?} (expected one of: {})", Scaffold::NAMES)),
        }
    }
}

const STANDARD_SYSTEM_PROMPT: &str = "You are a software engineer working alone in a Linux container. \
You fix issues in the code repository at /testbed by running shell commands and editing files with \
the tools you are given. Every reply calls at least one tool; the results come back in the next \
message. Work in small, checked steps: find the relevant code, reproduce the problem, make the \
smallest change that fixes it, and run the tests that exercise it. Do not modify the existing \
tests. When the fix is complete, call `finish`.";

fn call_format() -> String {
    format!("{TOOL_CALL_OPEN}\n{{\"name\": \"<tool name>\", \"arguments\": {{<the arguments as a JSON object>}}}}\n{TOOL_CALL_CLOSE}")
}

/// The answer to a reply that calls no tool.
pub fn no_tool_call_message(tools: &[Value]) -> Value {
    json!({"role": "user", "content": format!(
        "Your reply did not call a tool, so nothing was run. Continue with the task by calling one \
         of the tools ({}) in this format:\n{}\nWhen the issue is fixed, call `finish`.",
        signatures(tools),
        call_format()
    )})
}

/// The answer to a tool-call block that could not be used.
pub fn bad_call_message(problem: &str, tools: &[Value]) -> Value {
    tool_message(format!(
        "ERROR: this tool call was not run: {problem}.\nWrite each call as\n{}\nThe tools are: {}.",
        call_format(),
        signatures(tools)
    ))
}

/// The answer to a call that ran: its output (the exit code of a command appended), clipped to
/// `max_chars` characters in the middle with a marker saying how much was left out.
pub fn observation_message(tool: &str, observation: &Observation, max_chars: usize) -> Value {
    let mut text = observation.output.clone();
    if tool == EXECUTE_BASH {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        match observation.exit_code {
            Some(code) => text.push_str(&format!("[exit code: {code}]")),
            None => text.push_str("[no exit code: the command was killed]"),
        }
    }
    tool_message(clip_middle(&text, max_chars))
}

fn tool_message(content: String) -> Value {
    json!({"role": "tool", "content": content})
}

/// At most `max_chars` characters of `text`: head and tail kept, the middle replaced by a marker.
pub fn clip_middle(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    let head = max_chars / 2;
    let tail = max_chars - head;
    let head_end = text.char_indices().nth(head).map_or(text.len(), |(i, _)| i);
    let tail_start = text.char_indices().nth(total - tail).map_or(text.len(), |(i, _)| i);
    format!(
        "{}\n[... observation clipped: {} of {total} characters omitted from the middle; narrow the command (grep, head, tail, sed -n) to see them ...]\n{}",
        &text[..head_end],
        total - max_chars,
        &text[tail_start..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_head_and_tail_on_char_boundaries() {
        assert_eq!(clip_middle("short", 10), "short");
        let text = "é".repeat(30) + &"x".repeat(30);
        let clipped = clip_middle(&text, 10);
        assert!(clipped.starts_with("ééééé\n[... observation clipped: 50 of 60 characters"), "{clipped}");
        assert!(clipped.ends_with("\nxxxxx"), "{clipped}");
    }

    #[test]
    fn bash_observations_carry_the_exit_code() {
        let obs = Observation { output: "boom".into(), exit_code: Some(2), timed_out: false, finished: false };
        assert_eq!(observation_message(EXECUTE_BASH, &obs, 100)["content"], "boom\n[exit code: 2]");
        assert_eq!(observation_message("str_replace_editor", &obs, 100)["content"], "boom");
    }

    #[test]
    fn scaffolds_parse_by_name_and_differ_in_tools_and_prompts() {
        assert_eq!("minimal".parse::<Scaffold>(), Ok(Scaffold::Minimal));
        assert_eq!("standard".parse::<Scaffold>(), Ok(Scaffold::Standard));
        let err = "tiny".parse::<Scaffold>().unwrap_err();
        assert!(err.contains("\"tiny\"") && err.contains("standard, minimal"), "{err}");
        let names = |s: Scaffold| s.tools().iter().map(|t| t["function"]["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(names(Scaffold::Standard), ["execute_bash", "str_replace_editor", "finish"]);
        assert_eq!(names(Scaffold::Minimal), ["str_replace_editor", "finish"]);
        let issue = "f(1) is 2, should be 3";
        for scaffold in [Scaffold::Standard, Scaffold::Minimal] {
            let messages = scaffold.initial_messages(issue);
            assert_eq!(messages[0]["content"], scaffold.system_prompt());
            assert!(messages[1]["content"].as_str().unwrap().contains(&format!("<issue>\n{issue}\n</issue>")));
        }
        let length = |s: Scaffold| serde_json::to_string(&(s.initial_messages(issue), s.tools())).unwrap().len();
        assert!(length(Scaffold::Minimal) * 4 < length(Scaffold::Standard), "{} vs {}", length(Scaffold::Minimal), length(Scaffold::Standard));
    }
}
