//! The agent's three tools (`execute_bash`, `str_replace_editor`, `finish`): calls,
//! observations, JSON schemas for prompts, and dispatch onto a [`Sandbox`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::editor::EditorArgs;
use crate::error::Result;
use crate::sandbox::Sandbox;

/// A tool call as the model emits it (function-calling format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

/// What the model sees after a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub output: String,
    /// Exit code of a bash command; 0/1 for editor success/failure; `None` if it never finished.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// Set by `finish`: the episode is over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

impl Observation {
    fn error(msg: impl Into<String>) -> Self {
        Observation {
            output: format!("ERROR: {}", msg.into()),
            exit_code: Some(1),
            timed_out: false,
            finished: false,
        }
    }
}

pub const EXECUTE_BASH: &str = "execute_bash";
pub const STR_REPLACE_EDITOR: &str = "str_replace_editor";
pub const FINISH: &str = "finish";

/// Tool schemas in the OpenAI / Qwen function-calling format.
pub fn tool_schemas() -> Value {
    json!([
        {
            "type": "function",
            "function": {
                "name": EXECUTE_BASH,
                "description": "Run a bash command in the task's container and return its output (stdout and stderr merged) and exit code.\n* The shell is persistent: the working directory, exported variables and background jobs carry over to the next call.\n* Commands have no terminal and no standard input; do not start interactive programs (use flags such as `-y`, pipe input, or write a script).\n* A command that runs longer than its timeout is killed together with everything it started; you get what it printed so far. Put long-running servers in the background and redirect their output to a file.\n* Long output is clipped in the middle; redirect it to a file and inspect it with `head`, `tail` or `grep`.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "description": "The bash command (may span several lines)."},
                        "timeout": {"type": "number", "description": "Optional: seconds before the command is killed (default 120)."}
                    },
                    "required": ["command"]
                }
            }
        },
        {
            "type": "function",
            "function": {
                "name": STR_REPLACE_EDITOR,
                "description": "View, create and edit files in the container. Paths must be absolute.\n* `view` shows a file with line numbers (like `cat -n`), optionally only `view_range` [start, end] (end -1 = to the end), or lists a directory two levels deep without hidden entries.\n* `create` writes a new file with `file_text`; it refuses to overwrite an existing file.\n* `str_replace` replaces `old_str` with `new_str`; `old_str` must match exactly one place in the file, whitespace included; include enough surrounding lines to make it unique.\n* `insert` inserts `new_str` after line `insert_line` (0 = at the top).\n* `undo_edit` reverts the last edit made to the file by this tool.\n* Long output is clipped.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"], "description": "The editor command."},
                        "path": {"type": "string", "description": "Absolute path of a file or directory, e.g. `/testbed/src/module.py`."},
                        "file_text": {"type": "string", "description": "`create`: the content of the new file."},
                        "old_str": {"type": "string", "description": "`str_replace`: the exact text to replace."},
                        "new_str": {"type": "string", "description": "`str_replace`: the replacement (empty to delete); `insert`: the text to insert."},
                        "insert_line": {"type": "integer", "description": "`insert`: the line after which `new_str` is inserted."},
                        "view_range": {"type": "array", "items": {"type": "integer"}, "description": "`view` of a file: [start, end] line numbers, 1-based; end -1 means to the end."}
                    },
                    "required": ["command", "path"]
                }
            }
        },
        {
            "type": "function",
            "function": {
                "name": FINISH,
                "description": "Call when the task is done (or cannot be done) to end the interaction.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string", "description": "A short summary of what was done."}
                    },
                    "required": []
                }
            }
        }
    ])
}

/// Terse schemas of `str_replace_editor` (its `str_replace` command only) and `finish`: the tools of
/// the minimal scaffold, whose prompts must fit a tiny model.
pub fn minimal_tool_schemas() -> Value {
    json!([
        {
            "type": "function",
            "function": {
                "name": STR_REPLACE_EDITOR,
                "description": "Replace the text `old_str` (exactly one match) with `new_str` in the file `path`.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "enum": ["str_replace"]},
                        "path": {"type": "string"},
                        "old_str": {"type": "string"},
                        "new_str": {"type": "string"}
                    },
                    "required": ["command", "path", "old_str", "new_str"]
                }
            }
        },
        {
            "type": "function",
            "function": {
                "name": FINISH,
                "description": "End the task.",
                "parameters": {"type": "object", "properties": {"message": {"type": "string"}}, "required": []}
            }
        }
    ])
}

/// Some models send the arguments as a JSON string instead of an object.
fn args_object(v: &Value) -> std::result::Result<Value, String> {
    match v {
        Value::Object(_) => Ok(v.clone()),
        Value::Null => Ok(json!({})),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| format!("arguments must be a JSON object, got the string {s:?}")),
        other => Err(format!("arguments must be a JSON object, got {other}")),
    }
}

impl Sandbox {
    /// Runs one tool call. Mistakes in the call become error observations; `Err` means the
    /// sandbox cannot go on: the infrastructure failed (engine unreachable), or the call's own
    /// doing ended it ([`crate::SandboxError::is_policy_fault`]: the container exited, or its
    /// writes exceeded `Limits::storage_bytes`, checked after every call that can write).
    /// A call's `timeout` is capped at `SandboxSpec::max_call_timeout`.
    pub async fn call(&mut self, call: &ToolCall) -> Result<Observation> {
        let args = match args_object(&call.arguments) {
            Ok(a) => a,
            Err(e) => return Ok(Observation::error(e)),
        };
        match call.name.as_str() {
            EXECUTE_BASH => {
                let Some(command) = args.get("command").and_then(Value::as_str) else {
                    return Ok(Observation::error("Parameter `command` (a string) is required for execute_bash"));
                };
                if command.trim().is_empty() {
                    return Ok(Observation::error("The command is empty: give a bash command to run."));
                }
                let timeout = match args.get("timeout") {
                    None | Some(Value::Null) => None,
                    Some(t) => match t.as_f64().filter(|t| *t > 0.0 && t.is_finite()) {
                        Some(t) => Some(Duration::from_secs_f64(t.min(self.spec().max_call_timeout.as_secs_f64()))),
                        None => return Ok(Observation::error(format!("`timeout` must be a positive number of seconds, got {t}"))),
                    },
                };
                let out = self.execute_bash(command, timeout).await?;
                self.check_storage().await?;
                Ok(Observation {
                    output: out.output,
                    exit_code: out.exit_code,
                    timed_out: out.timed_out,
                    finished: false,
                })
            }
            STR_REPLACE_EDITOR => {
                let a: EditorArgs = match serde_json::from_value(args) {
                    Ok(a) => a,
                    Err(e) => return Ok(Observation::error(format!("invalid str_replace_editor arguments: {e}"))),
                };
                let result = self.str_replace_editor(&a).await?;
                if a.command != "view" {
                    self.check_storage().await?;
                }
                Ok(match result {
                    Ok(text) => Observation { output: text, exit_code: Some(0), timed_out: false, finished: false },
                    Err(text) => Observation::error(text),
                })
            }
            FINISH => Ok(Observation {
                output: args.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                exit_code: Some(0),
                timed_out: false,
                finished: true,
            }),
            other => Ok(Observation::error(format!(
                "Unknown tool `{other}`. The available tools are: {EXECUTE_BASH}, {STR_REPLACE_EDITOR}, {FINISH}."
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_name_the_three_tools() {
        let s = tool_schemas();
        let names: Vec<&str> = s
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [EXECUTE_BASH, STR_REPLACE_EDITOR, FINISH]);
        for t in s.as_array().unwrap() {
            assert_eq!(t["type"], "function");
            assert_eq!(t["function"]["parameters"]["type"], "object");
        }
    }

    #[test]
    fn string_arguments_are_parsed() {
        assert_eq!(args_object(&json!("{\"a\":1}")).unwrap(), json!({"a":1}));
        assert!(args_object(&json!("nope")).is_err());
        assert!(args_object(&json!([1])).is_err());
    }

    #[test]
    fn observation_json_shape() {
        let o = Observation {
            output: "x".into(),
            exit_code: Some(0),
            timed_out: false,
            finished: false,
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({"output":"x","exit_code":0,"timed_out":false})
        );
    }
}
