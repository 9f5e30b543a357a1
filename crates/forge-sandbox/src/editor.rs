//! `str_replace_editor`, host-side: files travel over the Docker archive API (tar), directory
//! listings and path checks over one-shot execs of POSIX `sh`/`find`. No Python in the image.
//!
//! Semantics follow the OpenHands CodeAct editor (what trained models expect); mistakes of the
//! caller come back as `Err(message)` observations, never as `SandboxError`.

use std::time::Duration;

use crate::error::{Result, SandboxError};
use crate::sandbox::Sandbox;

/// Longest observation before it is clipped.
pub const MAX_RESPONSE_LEN: usize = 16_000;
/// Appended to a clipped observation.
pub const CLIPPED_NOTICE: &str = "<response clipped><NOTE>To save on context only part of this file has been shown to you. You should retry this tool after you have searched inside the file with `grep -n` in order to find the line numbers of what you are looking for.</NOTE>";
/// Lines of context around an edit in the snippet shown after it.
pub const SNIPPET_LINES: usize = 4;
/// Largest file the editor reads.
pub const MAX_FILE_BYTES: usize = 32 << 20;

/// One editor call.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditorArgs {
    pub command: String,
    pub path: String,
    pub file_text: Option<String>,
    pub old_str: Option<String>,
    pub new_str: Option<String>,
    pub insert_line: Option<serde_json::Value>,
    pub view_range: Option<serde_json::Value>,
}

/// The outcome: `Ok(text)` for success, `Err(text)` for a mistake of the caller.
pub type EditorResult = std::result::Result<String, String>;

pub const COMMANDS: &[&str] = &["view", "create", "str_replace", "insert", "undo_edit"];

fn clip(s: String) -> String {
    if s.len() <= MAX_RESPONSE_LEN {
        return s;
    }
    let mut cut = MAX_RESPONSE_LEN;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &s[..cut], CLIPPED_NOTICE)
}

/// `cat -n` style numbering, starting at `first` (1-based).
pub fn numbered(lines: &[&str], first: usize) -> String {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        out.push_str(&format!("{:6}\t{}\n", first + i, l));
    }
    out
}

/// Lines of a text without the empty string after a final newline.
pub fn lines_of(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        v.pop();
    }
    if text.is_empty() {
        v.clear();
    }
    v
}

/// `view` of a file's text, with optional `view_range` ([start, end], 1-based, end -1 = EOF).
pub fn view_text(path: &str, text: &str, view_range: Option<&serde_json::Value>) -> EditorResult {
    let lines = lines_of(text);
    let n = lines.len();
    let (start, end) = match view_range {
        None | Some(serde_json::Value::Null) => (1, n),
        Some(v) => {
            let pair = v
                .as_array()
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_i64()?, a[1].as_i64()?)));
            let Some((s, e)) = pair else {
                return Err("Invalid `view_range`. It should be a list of two integers.".into());
            };
            if s < 1 || s as usize > n.max(1) {
                return Err(format!(
                    "Invalid `view_range`: {v}. Its first element `{s}` should be within the range of lines of the file: [1, {n}]"
                ));
            }
            let e = if e == -1 {
                n
            } else if e < s {
                return Err(format!(
                    "Invalid `view_range`: {v}. Its second element `{e}` should be larger or equal than its first `{s}`"
                ));
            } else if e as usize > n {
                return Err(format!(
                    "Invalid `view_range`: {v}. Its second element `{e}` should be smaller than the number of lines in the file: `{n}`"
                ));
            } else {
                e as usize
            };
            (s as usize, e)
        }
    };
    let shown = if n == 0 {
        &lines[..]
    } else {
        &lines[start - 1..end]
    };
    Ok(clip(format!(
        "Here's the result of running `cat -n` on {path}:\n{}",
        numbered(shown, start)
    )))
}

/// `str_replace` on text. Returns the new text and the observation.
pub fn str_replace_text(
    path: &str,
    text: &str,
    old: &str,
    new: &str,
) -> std::result::Result<(String, String), String> {
    if old.is_empty() {
        return Err("Parameter `old_str` must not be empty: it has to match existing text exactly once. Use `insert` or `create` to add text.".into());
    }
    if old == new {
        return Err(
            "No replacement was performed. `new_str` and `old_str` must be different.".into(),
        );
    }
    let hits: Vec<usize> = text.match_indices(old).map(|(i, _)| i).collect();
    match hits.len() {
        0 => Err(format!(
            "No replacement was performed, old_str `{old}` did not appear verbatim in {path}."
        )),
        1 => {
            let at = hits[0];
            let new_text = format!("{}{}{}", &text[..at], new, &text[at + old.len()..]);
            let line = text[..at].matches('\n').count();
            let start = line.saturating_sub(SNIPPET_LINES);
            let end = line + SNIPPET_LINES + new.matches('\n').count();
            let lines = lines_of(&new_text);
            let end = end.min(lines.len().saturating_sub(1));
            let snippet = if lines.is_empty() {
                String::new()
            } else {
                numbered(&lines[start.min(end)..=end], start.min(end) + 1)
            };
            let msg = format!(
                "The file {path} has been edited. Here's the result of running `cat -n` on a snippet of {path}:\n{snippet}Review the changes and make sure they are as expected. Edit the file again if necessary."
            );
            Ok((new_text, clip(msg)))
        }
        k => {
            let lines: Vec<String> = hits
                .iter()
                .map(|&i| (text[..i].matches('\n').count() + 1).to_string())
                .collect();
            Err(format!(
                "No replacement was performed. Multiple occurrences of old_str `{old}` ({k} times) in lines [{}]. Please ensure it is unique.",
                lines.join(", ")
            ))
        }
    }
}

/// `insert` of `new` after line `after` (0 = at the top). Returns new text and observation.
pub fn insert_text(
    path: &str,
    text: &str,
    after: &serde_json::Value,
    new: &str,
) -> std::result::Result<(String, String), String> {
    let lines = lines_of(text);
    let n = lines.len();
    let Some(at) = after.as_i64() else {
        return Err(format!("Invalid `insert_line` parameter: {after}. It should be an integer within the range of lines of the file: [0, {n}]"));
    };
    if at < 0 || at as usize > n {
        return Err(format!(
            "Invalid `insert_line` parameter: {at}. It should be within the range of lines of the file: [0, {n}]"
        ));
    }
    let at = at as usize;
    let new_lines = lines_of(new);
    let new_lines: Vec<&str> = if new.is_empty() { vec![""] } else { new_lines };
    let mut all: Vec<&str> = Vec::with_capacity(n + new_lines.len());
    all.extend_from_slice(&lines[..at]);
    all.extend_from_slice(&new_lines);
    all.extend_from_slice(&lines[at..]);
    let mut new_text = all.join("\n");
    if text.ends_with('\n') || text.is_empty() {
        new_text.push('\n');
    }
    let s = at.saturating_sub(SNIPPET_LINES);
    let e = (at + new_lines.len() + SNIPPET_LINES).min(all.len());
    let msg = format!(
        "The file {path} has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n{}Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). Edit the file again if necessary.",
        numbered(&all[s..e], s + 1)
    );
    Ok((new_text, clip(msg)))
}

/// What a path is inside the container.
#[derive(Debug, Clone, PartialEq)]
pub enum PathKind {
    Missing,
    /// A regular file, with its canonical path (symlinks resolved).
    File(String),
    Dir,
    Other,
}

const STAT: &str = r#"p=$1
if [ -d "$p" ]; then echo dir
elif [ -f "$p" ]; then echo file; readlink -f -- "$p" 2>/dev/null || echo "$p"
elif [ -e "$p" ] || [ -L "$p" ]; then echo other
else echo missing; fi"#;

/// The observation for a file transfer at `path` that failed because of the path, with the
/// container still running: the engine answers 404 for paths that vanish between the check and
/// the transfer (`/proc/self/...` resolves to the checking process) and refuses special or
/// read-only paths. Other failures (container gone, engine unreachable) stay errors.
fn path_problem(path: &str, e: SandboxError) -> Result<String> {
    use bollard::errors::Error::DockerResponseServerError;
    match e {
        SandboxError::Docker { source: DockerResponseServerError { status_code: 404, .. }, .. } => {
            Ok(format!("The path {path} does not exist (no such file). Please provide a valid path."))
        }
        SandboxError::Docker { source: DockerResponseServerError { message, .. }, .. } | SandboxError::Transfer { detail: message, .. } => {
            Ok(format!("The file {path} cannot be read or written by the editor: {message}. Use execute_bash to work on it."))
        }
        e => Err(e),
    }
}

impl Sandbox {
    /// What `path` is in the container.
    pub async fn path_kind(&self, path: &str) -> Result<PathKind> {
        let out = self
            .exec(
                &["/bin/sh", "-c", STAT, "sh", path],
                Some(Duration::from_secs(30)),
            )
            .await?;
        let mut lines = out.output.lines();
        Ok(match lines.next().unwrap_or("") {
            "dir" => PathKind::Dir,
            "file" => PathKind::File(lines.next().unwrap_or(path).to_string()),
            "other" => PathKind::Other,
            _ => PathKind::Missing,
        })
    }

    /// Runs one `str_replace_editor` call.
    pub async fn str_replace_editor(&mut self, a: &EditorArgs) -> Result<EditorResult> {
        let path = a.path.as_str();
        if !COMMANDS.contains(&a.command.as_str()) {
            return Ok(Err(format!(
                "Unrecognized command {}. The allowed commands for the str_replace_editor tool are: {}",
                a.command,
                COMMANDS.join(", ")
            )));
        }
        if !path.starts_with('/') {
            let suggested = format!("/{}", path.trim_start_matches("./"));
            return Ok(Err(format!(
                "The path {path} is not an absolute path, it should start with `/`. Maybe you meant {suggested}?"
            )));
        }
        let kind = self.path_kind(path).await?;
        match (&kind, a.command.as_str()) {
            (PathKind::Missing, "create") => {}
            (PathKind::Missing, _) => {
                return Ok(Err(format!("The path {path} does not exist. Please provide a valid path.")))
            }
            (_, "create") => {
                return Ok(Err(format!(
                    "File already exists at: {path}. Cannot overwrite files using command `create`."
                )))
            }
            (PathKind::Dir, "view") => {}
            (PathKind::Dir, _) => {
                return Ok(Err(format!(
                    "The path {path} is a directory and only the `view` command can be used on directories"
                )))
            }
            (PathKind::Other, _) => {
                return Ok(Err(format!("The path {path} is not a regular file or directory.")))
            }
            _ => {}
        }
        let file = match &kind {
            PathKind::File(real) => real.clone(),
            _ => path.to_string(),
        };
        match a.command.as_str() {
            "view" => {
                if kind == PathKind::Dir {
                    if a.view_range.as_ref().is_some_and(|v| !v.is_null()) {
                        return Ok(Err("The `view_range` parameter is not allowed when `path` points to a directory.".into()));
                    }
                    return self.view_dir(path).await.map(Ok);
                }
                let text = match self.read_text(path, &file).await? {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(e)),
                };
                Ok(view_text(path, &text, a.view_range.as_ref()))
            }
            "create" => {
                let Some(text) = &a.file_text else {
                    return Ok(Err(
                        "Parameter `file_text` is required for command: create".into()
                    ));
                };
                if let Err(e) = self.write_file(path, text.as_bytes(), 0o644).await {
                    return Ok(Err(path_problem(path, e)?));
                }
                Ok(Ok(format!("File created successfully at: {path}")))
            }
            "str_replace" => {
                let Some(old) = &a.old_str else {
                    return Ok(Err(
                        "Parameter `old_str` is required for command: str_replace".into(),
                    ));
                };
                let new = a.new_str.as_deref().unwrap_or("");
                let (text, mode) = match self.read_text_mode(path, &file).await? {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(e)),
                };
                match str_replace_text(path, &text, old, new) {
                    Ok((new_text, msg)) => {
                        if let Err(e) = self.write_file(&file, new_text.as_bytes(), mode).await {
                            return Ok(Err(path_problem(path, e)?));
                        }
                        self.history.entry(file).or_default().push(text);
                        Ok(Ok(msg))
                    }
                    Err(e) => Ok(Err(e)),
                }
            }
            "insert" => {
                let Some(line) = &a.insert_line else {
                    return Ok(Err(
                        "Parameter `insert_line` is required for command: insert".into(),
                    ));
                };
                let Some(new) = &a.new_str else {
                    return Ok(Err(
                        "Parameter `new_str` is required for command: insert".into()
                    ));
                };
                let (text, mode) = match self.read_text_mode(path, &file).await? {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(e)),
                };
                match insert_text(path, &text, line, new) {
                    Ok((new_text, msg)) => {
                        if let Err(e) = self.write_file(&file, new_text.as_bytes(), mode).await {
                            return Ok(Err(path_problem(path, e)?));
                        }
                        self.history.entry(file).or_default().push(text);
                        Ok(Ok(msg))
                    }
                    Err(e) => Ok(Err(e)),
                }
            }
            "undo_edit" => {
                let Some(old) = self.history.get_mut(&file).and_then(|h| h.pop()) else {
                    return Ok(Err(format!("No edit history found for {path}.")));
                };
                let mode = match self.read_file(&file, MAX_FILE_BYTES).await {
                    Ok((_, m)) => m,
                    Err(_) => 0o644,
                };
                if let Err(e) = self.write_file(&file, old.as_bytes(), mode).await {
                    return Ok(Err(path_problem(path, e)?));
                }
                Ok(Ok(clip(format!(
                    "Last edit to {path} undone successfully. Here's the result of running `cat -n` on {path}:\n{}",
                    numbered(&lines_of(&old), 1)
                ))))
            }
            _ => unreachable!("checked above"),
        }
    }

    /// The text of `file` (the canonical path of `path`, which observations name).
    async fn read_text(&self, path: &str, file: &str) -> Result<EditorResult> {
        Ok(self.read_text_mode(path, file).await?.map(|(t, _)| t))
    }

    async fn read_text_mode(
        &self,
        path: &str,
        file: &str,
    ) -> Result<std::result::Result<(String, u32), String>> {
        let (bytes, mode) = match self.read_file(file, MAX_FILE_BYTES).await {
            Ok(x) => x,
            Err(SandboxError::Transfer { detail, .. }) if detail.starts_with("larger than") => {
                return Ok(Err(format!(
                    "The file {path} is larger than {} MiB; use execute_bash (grep, sed -n) to work on it.",
                    MAX_FILE_BYTES >> 20
                )))
            }
            Err(e) => return Ok(Err(path_problem(path, e)?)),
        };
        match String::from_utf8(bytes) {
            Ok(t) => Ok(Ok((t, mode))),
            Err(_) => Ok(Err(format!(
                "The file {path} is not UTF-8 text; the editor only handles text files. Use execute_bash to inspect it."
            ))),
        }
    }

    async fn view_dir(&self, path: &str) -> Result<String> {
        let out = self
            .exec(
                &["find", path, "-maxdepth", "2"],
                Some(Duration::from_secs(60)),
            )
            .await?;
        let base = path.trim_end_matches('/');
        let mut entries: Vec<&str> = out
            .output
            .lines()
            .filter(|l| {
                let rel = l.strip_prefix(base).unwrap_or(l);
                !rel.split('/').any(|c| c.starts_with('.'))
            })
            .collect();
        entries.sort_unstable();
        Ok(clip(format!(
            "Here's the files and directories up to 2 levels deep in {path}, excluding hidden items:\n{}\n",
            entries.join("\n")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbering_and_ranges() {
        let t = "a\nb\nc\n";
        let v = view_text("/f", t, None).unwrap();
        assert_eq!(
            v,
            "Here's the result of running `cat -n` on /f:\n     1\ta\n     2\tb\n     3\tc\n"
        );
        let v = view_text("/f", t, Some(&json!([2, -1]))).unwrap();
        assert!(v.ends_with("     2\tb\n     3\tc\n"));
        assert!(view_text("/f", t, Some(&json!([0, 2])))
            .unwrap_err()
            .contains("[1, 3]"));
        assert!(view_text("/f", t, Some(&json!([3, 2])))
            .unwrap_err()
            .contains("larger or equal"));
        assert!(view_text("/f", t, Some(&json!([1, 9])))
            .unwrap_err()
            .contains("`3`"));
        assert!(view_text("/f", t, Some(&json!([1])))
            .unwrap_err()
            .contains("list of two integers"));
        assert!(view_text("/f", t, Some(&json!("1,2")))
            .unwrap_err()
            .contains("list of two integers"));
    }

    #[test]
    fn replace_once_many_none() {
        let t = "x = 1\ny = 2\nx = 1\n";
        let e = str_replace_text("/f", t, "x = 1", "x = 3").unwrap_err();
        assert!(
            e.contains("Multiple occurrences") && e.contains("[1, 3]") && e.contains("2 times"),
            "{e}"
        );
        let e = str_replace_text("/f", t, "z", "w").unwrap_err();
        assert!(e.contains("did not appear verbatim"), "{e}");
        let (n, msg) = str_replace_text("/f", t, "y = 2", "y = 5").unwrap();
        assert_eq!(n, "x = 1\ny = 5\nx = 1\n");
        assert!(msg.contains("     2\ty = 5"), "{msg}");
        assert!(str_replace_text("/f", t, "", "a").is_err());
        assert!(str_replace_text("/f", t, "y = 2", "y = 2")
            .unwrap_err()
            .contains("must be different"));
    }

    #[test]
    fn insert_positions() {
        let t = "a\nb\n";
        assert_eq!(insert_text("/f", t, &json!(0), "z").unwrap().0, "z\na\nb\n");
        assert_eq!(insert_text("/f", t, &json!(1), "z").unwrap().0, "a\nz\nb\n");
        assert_eq!(
            insert_text("/f", t, &json!(2), "z\nw\n").unwrap().0,
            "a\nb\nz\nw\n"
        );
        assert_eq!(insert_text("/f", "a", &json!(1), "z").unwrap().0, "a\nz");
        assert!(insert_text("/f", t, &json!(3), "z")
            .unwrap_err()
            .contains("[0, 2]"));
        assert!(insert_text("/f", t, &json!(-1), "z").is_err());
        assert!(insert_text("/f", t, &json!("x"), "z").is_err());
    }

    #[test]
    fn clipping() {
        let big = "x".repeat(MAX_RESPONSE_LEN * 2);
        let v = view_text("/f", &big, None).unwrap();
        assert!(v.ends_with(CLIPPED_NOTICE));
        assert!(v.len() <= MAX_RESPONSE_LEN + CLIPPED_NOTICE.len());
    }
}
