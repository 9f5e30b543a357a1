//! Tool calls out of model text, in the Qwen / Hermes format:
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, possibly several per turn, with
//! free text (and `<think>` reasoning) around them. Every call is checked against the tools' JSON
//! schemas; whatever is wrong becomes a message for the model, never a panic or an error.

use forge_sandbox::ToolCall;
use serde_json::{Map, Value};

pub const TOOL_CALL_OPEN: &str = "<tool_call>";
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";
const THINK_CLOSE: &str = "</think>";

/// One `<tool_call>` block of a turn: a call that matches its tool's schema, or what is wrong.
pub type ParsedCall = Result<ToolCall, String>;

/// The tool-call blocks of an assistant turn, in order (empty: the turn calls no tool).
/// Reasoning up to the last `</think>` is skipped: calls drafted while thinking are not made.
pub fn parse_tool_calls(text: &str, tools: &[Value]) -> Vec<ParsedCall> {
    let visible = text.rfind(THINK_CLOSE).map_or(text, |i| &text[i + THINK_CLOSE.len()..]);
    let mut calls = Vec::new();
    let mut rest = visible;
    while let Some(open) = rest.find(TOOL_CALL_OPEN) {
        let after = &rest[open + TOOL_CALL_OPEN.len()..];
        // A nested opening tag before the closing one means this block was never closed.
        let close = after.find(TOOL_CALL_CLOSE);
        let next_open = after.find(TOOL_CALL_OPEN);
        match close.filter(|c| next_open.is_none_or(|n| *c < n)) {
            Some(close) => {
                calls.push(parse_call(&after[..close], tools));
                rest = &after[close + TOOL_CALL_CLOSE.len()..];
            }
            None => {
                let end = next_open.unwrap_or(after.len());
                // Generation may stop right before the closing tag: accept a complete call.
                calls.push(parse_call(&after[..end], tools).map_err(|e| {
                    format!("the {TOOL_CALL_OPEN} block is not closed with {TOOL_CALL_CLOSE} ({e})")
                }));
                rest = &after[end..];
            }
        }
    }
    calls
}

fn parse_call(body: &str, tools: &[Value]) -> ParsedCall {
    let value: Value = serde_json::from_str(body.trim()).map_err(|e| format!("the call is not valid JSON ({e})"))?;
    let Value::Object(mut object) = value else {
        return Err(format!("the call must be a JSON object with \"name\" and \"arguments\", got {}", kind(&value)));
    };
    let name = match object.remove("name") {
        Some(Value::String(name)) => name,
        Some(other) => return Err(format!("\"name\" must be a string, got {}", kind(&other))),
        None => return Err("the call has no \"name\"".into()),
    };
    let arguments = match object.remove("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments,
        // Some models send the arguments as a JSON-encoded string.
        Some(Value::String(text)) => match serde_json::from_str(&text) {
            Ok(Value::Object(arguments)) => arguments,
            _ => return Err("\"arguments\" is a string that is not a JSON object; give the arguments as an object".into()),
        },
        Some(other) => return Err(format!("\"arguments\" must be a JSON object, got {}", kind(&other))),
    };
    if let Some(key) = object.keys().next() {
        return Err(format!("unexpected key \"{key}\" in the call: only \"name\" and \"arguments\" are allowed (the tool's parameters go inside \"arguments\")"));
    }
    let Some(schema) = find_tool(tools, &name) else {
        return Err(format!("unknown tool \"{name}\"; the tools are: {}", tool_names(tools).join(", ")));
    };
    check_arguments(&name, &arguments, &schema["parameters"])?;
    Ok(ToolCall { name, arguments: Value::Object(arguments) })
}

fn find_tool<'a>(tools: &'a [Value], name: &str) -> Option<&'a Value> {
    tools.iter().map(|t| t.get("function").unwrap_or(t)).find(|f| f["name"] == name)
}

fn tool_names(tools: &[Value]) -> Vec<String> {
    tools.iter().filter_map(|t| t.get("function").unwrap_or(t)["name"].as_str().map(str::to_string)).collect()
}

/// Checks arguments against the subset of JSON Schema the tool schemas use: `properties` with
/// `type` (and `items` of arrays), `enum`, `required`, no other keys.
fn check_arguments(tool: &str, arguments: &Map<String, Value>, schema: &Value) -> Result<(), String> {
    let empty = Map::new();
    let properties = schema["properties"].as_object().unwrap_or(&empty);
    for (key, value) in arguments {
        let Some(property) = properties.get(key) else {
            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
            return Err(format!("{tool} has no argument \"{key}\"; its arguments are {}", quoted(&known)));
        };
        if let Some(expected) = property["type"].as_str() {
            if !has_type(value, expected, &property["items"]) {
                return Err(format!("argument \"{key}\" of {tool} must be {}, got {}", describe_type(expected, &property["items"]), kind(value)));
            }
        }
        if let Some(allowed) = property["enum"].as_array() {
            if !allowed.contains(value) {
                let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(format!("argument \"{key}\" of {tool} must be one of {}, got {value}", allowed.join(", ")));
            }
        }
    }
    if let Some(required) = schema["required"].as_array() {
        let missing: Vec<&str> = required.iter().filter_map(Value::as_str).filter(|r| !arguments.contains_key(*r)).collect();
        if !missing.is_empty() {
            return Err(format!("{tool} requires the argument(s) {}", quoted(&missing)));
        }
    }
    Ok(())
}

fn has_type(value: &Value, expected: &str, items: &Value) -> bool {
    match expected {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.as_array().is_some_and(|elements| {
            items["type"].as_str().is_none_or(|t| elements.iter().all(|e| has_type(e, t, &Value::Null)))
        }),
        _ => true,
    }
}

fn describe_type(expected: &str, items: &Value) -> String {
    match (expected, items["type"].as_str()) {
        ("array", Some(item)) => format!("an array of {item}s"),
        ("integer", _) => "an integer".into(),
        (t, _) => format!("a {t}"),
    }
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
}

/// The tools as short signatures for error messages: `execute_bash(command, timeout?)`.
pub fn signatures(tools: &[Value]) -> String {
    let mut out = Vec::new();
    for tool in tools {
        let function = tool.get("function").unwrap_or(tool);
        let Some(name) = function["name"].as_str() else { continue };
        let required: Vec<&str> = function["parameters"]["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let params: Vec<String> = function["parameters"]["properties"]
            .as_object()
            .map(|p| p.keys().map(|k| if required.contains(&k.as_str()) { k.clone() } else { format!("{k}?") }).collect())
            .unwrap_or_default();
        out.push(format!("{name}({})", params.join(", ")));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_sandbox::tool_schemas;
    use serde_json::json;

    fn tools() -> Vec<Value> {
        tool_schemas().as_array().unwrap().clone()
    }

    fn parse(text: &str) -> Vec<ParsedCall> {
        parse_tool_calls(text, &tools())
    }

    #[test]
    fn calls_with_text_and_thinking_around_them() {
        let text = "<think>maybe <tool_call>{\"name\": \"finish\"}</tool_call></think>\nLet me look.\n<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"str_replace_editor\", \"arguments\": \"{\\\"command\\\": \\\"view\\\", \\\"path\\\": \\\"/testbed\\\"}\"}\n</tool_call>";
        let calls = parse(text);
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].as_ref().unwrap(), &ToolCall { name: "execute_bash".into(), arguments: json!({"command": "ls"}) });
        assert_eq!(calls[1].as_ref().unwrap().arguments, json!({"command": "view", "path": "/testbed"}));
    }

    #[test]
    fn no_call_is_an_empty_list() {
        assert!(parse("I think the bug is in foo.py").is_empty());
        assert!(parse("").is_empty());
    }

    #[test]
    fn every_kind_of_mistake_is_named() {
        let cases = [
            ("<tool_call>{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\"}</tool_call>", "not valid JSON"),
            ("<tool_call>[1]</tool_call>", "must be a JSON object"),
            ("<tool_call>{\"arguments\": {}}</tool_call>", "no \"name\""),
            ("<tool_call>{\"name\": 3}</tool_call>", "\"name\" must be a string"),
            ("<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>", "unknown tool \"rm_rf\""),
            ("<tool_call>{\"name\": \"execute_bash\", \"arguments\": {}}</tool_call>", "requires the argument(s) \"command\""),
            ("<tool_call>{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\", \"cwd\": \"/\"}}</tool_call>", "no argument \"cwd\""),
            ("<tool_call>{\"name\": \"execute_bash\", \"arguments\": {\"command\": [\"ls\"]}}</tool_call>", "must be a string, got an array"),
            ("<tool_call>{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\", \"timeout\": \"5\"}}</tool_call>", "\"timeout\" of execute_bash must be a number"),
            ("<tool_call>{\"name\": \"str_replace_editor\", \"arguments\": {\"command\": \"delete\", \"path\": \"/a\"}}</tool_call>", "must be one of"),
            ("<tool_call>{\"name\": \"str_replace_editor\", \"arguments\": {\"command\": \"view\", \"path\": \"/a\", \"view_range\": [1, \"x\"]}}</tool_call>", "an array of integers"),
            ("<tool_call>{\"name\": \"str_replace_editor\", \"arguments\": {\"command\": \"insert\", \"path\": \"/a\", \"insert_line\": 1.5, \"new_str\": \"\"}}</tool_call>", "must be an integer"),
            ("<tool_call>{\"name\": \"finish\", \"parameters\": {}}</tool_call>", "unexpected key \"parameters\""),
            ("<tool_call>{\"name\": \"finish\", \"arguments\": \"oops\"}</tool_call>", "string that is not a JSON object"),
            ("<tool_call>{\"name\": \"finish\", \"arguments\": 7}</tool_call>", "must be a JSON object, got the number 7"),
            ("<tool_call>{\"name\": \"finish\"", "not closed"),
        ];
        for (text, expected) in cases {
            let calls = parse(text);
            assert_eq!(calls.len(), 1, "{text}");
            let err = calls[0].as_ref().unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn an_unclosed_but_complete_call_is_accepted() {
        let calls = parse("<tool_call>\n{\"name\": \"finish\", \"arguments\": {}}\n");
        assert_eq!(calls[0].as_ref().unwrap().name, "finish");
        // an unclosed block followed by another block: two entries, the first complete
        let calls = parse("<tool_call>{\"name\": \"finish\"}<tool_call>{\"name\": \"finish\"}</tool_call>");
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(Result::is_ok));
    }

    #[test]
    fn signatures_mark_optional_arguments() {
        let s = signatures(&tools());
        assert!(s.starts_with("execute_bash(command, timeout?), str_replace_editor(command, path, file_text?"), "{s}");
        assert!(s.ends_with("finish(message?)"), "{s}");
    }
}
