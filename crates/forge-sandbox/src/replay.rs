//! `forge sandbox replay`: run a file of tool calls in a fresh container, one observation per call.

use std::io::{BufRead, Write};
use std::path::Path;

use crate::error::{Result, SandboxError};
use crate::runtime::{Runtime, SandboxSpec};
use crate::tools::ToolCall;

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySummary {
    /// Calls executed.
    pub calls: usize,
    /// A `finish` call ended the replay (later lines were not run).
    pub finished: bool,
}

/// Reads `{"name": ..., "arguments": {...}}` lines (blank lines and `#` comments skipped).
pub fn read_calls(path: &Path) -> Result<Vec<ToolCall>> {
    let file = std::fs::File::open(path).map_err(|e| SandboxError::Io {
        what: format!("opening {}", path.display()),
        source: e,
    })?;
    let mut calls = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| SandboxError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        })?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let call: ToolCall = serde_json::from_str(t).map_err(|e| SandboxError::BadToolCall {
            file: path.display().to_string(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        calls.push(call);
    }
    Ok(calls)
}

/// Runs the calls of `calls` (JSONL) in a fresh container of `image` (working directory
/// `workdir`, default `/`), writing one JSON observation per call to `out`
/// (`{"output": ..., "exit_code": ..., "timed_out": ...}`, plus `"finished": true` for `finish`).
/// Stops after `finish`. The container is removed afterwards, also on error.
pub async fn replay(
    image: &str,
    calls: &Path,
    workdir: Option<&str>,
    mut out: impl Write,
) -> Result<ReplaySummary> {
    let calls = read_calls(calls)?;
    let rt = Runtime::connect().await?;
    let mut spec = SandboxSpec::new(image).label("forge.purpose", "replay");
    if let Some(w) = workdir {
        spec = spec.workdir(w);
    }
    let mut sandbox = rt.create(&spec).await?;
    let mut summary = ReplaySummary {
        calls: 0,
        finished: false,
    };
    let mut result = Ok(());
    for call in &calls {
        let obs = match sandbox.call(call).await {
            Ok(o) => o,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        summary.calls += 1;
        let line = serde_json::to_string(&obs).expect("observation serializes");
        if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            result = Err(SandboxError::Io {
                what: "writing an observation".into(),
                source: e,
            });
            break;
        }
        if obs.finished {
            summary.finished = true;
            break;
        }
    }
    let removed = sandbox.remove().await;
    result?;
    removed?;
    Ok(summary)
}
