//! Issue-style problem statements for mined tasks: a commit message says what was *done*; an
//! agent should start from what was *wrong*. An OpenAI-compatible endpoint rewrites the message
//! (with the tests the change added, never the fix) into the issue a user would have filed; an
//! answer that quotes a changed line of the gold patch is refused and the commit message kept.

use serde_json::Value;

use crate::chat::ChatEndpoint;
use crate::instance::TaskInstance;

const SYSTEM: &str = "You write GitHub issues. You are given a commit message from a Python project and the tests that \
were added or changed with the commit. Write the issue a user would have filed BEFORE the change: a short title line, \
what they did (a minimal reproduction when the tests show one), what happened, and what they expected. Do not describe \
the fix or how to implement it, do not mention the tests, do not include a patch or diff. Answer with the issue text only.";

/// Lines of the gold patch's source changes long enough to identify the fix.
fn revealing_lines(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .map(|l| l[1..].trim().to_string())
        .filter(|l| l.chars().filter(|c| !c.is_whitespace()).count() >= 16 && !l.starts_with('#'))
        .collect()
}

/// Why `text` cannot stand as the statement, if it cannot.
pub fn refusal(text: &str, patch: &str) -> Option<String> {
    if text.split_whitespace().count() < 8 {
        return Some("the answer is too short to be an issue".into());
    }
    if text.contains("diff --git") || text.contains("\n+++ ") {
        return Some("the answer contains a patch".into());
    }
    revealing_lines(patch)
        .into_iter()
        .find(|l| text.contains(l.as_str()))
        .map(|l| format!("the answer quotes the fix: {l:?}"))
}

/// Rewrites `task`'s statement in place. The commit message stays in
/// `extra.original_problem_statement`; `extra.problem_statement_source` says which one is used
/// (`rewritten by MODEL` or `commit message (REASON)`).
pub async fn rewrite(ep: &ChatEndpoint, client: &reqwest::Client, task: &mut TaskInstance) {
    let tests: String = task.test_patch.chars().take(6_000).collect();
    let user = format!("Repository: {}\n\nCommit message:\n{}\n\nTests added or changed with the commit:\n{}", task.repo, task.problem_statement, tests);
    let source = match ep.complete(client, SYSTEM, &user, 512).await {
        Ok(answer) => {
            let answer = answer.trim().to_string();
            match refusal(&answer, &task.patch) {
                None => {
                    let original = std::mem::replace(&mut task.problem_statement, answer);
                    task.extra.insert("original_problem_statement".into(), Value::String(original));
                    format!("rewritten by {}", ep.model)
                }
                Some(why) => format!("commit message ({why})"),
            }
        }
        Err(e) => format!("commit message (the endpoint failed: {e})"),
    };
    task.extra.entry("original_problem_statement".to_string()).or_insert_with(|| Value::String(task.problem_statement.clone()));
    task.extra.insert("problem_statement_source".into(), Value::String(source));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_that_reveal_the_fix_are_refused() {
        let patch = "diff --git a/p/a.py b/p/a.py\n--- a/p/a.py\n+++ b/p/a.py\n@@ -1 +1 @@\n-    return year % 4 == 0\n+    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n";
        let issue = "is_leap(1900) returns True\n\nCalling is_leap(1900) gives True but 1900 was not a leap year; expected False.";
        assert_eq!(refusal(issue, patch), None);
        let leaky = format!("{issue}\nChange it to: return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)");
        assert!(refusal(&leaky, patch).unwrap().contains("quotes the fix"));
        assert!(refusal("Fix it.", patch).unwrap().contains("too short"));
        assert!(refusal(&format!("{issue}\ndiff --git a/x b/x"), patch).unwrap().contains("patch"));
    }
}
