//! `forge tasks label` and `forge tasks filter`: SPICE-style labels of task instances — difficulty,
//! test validity and issue clarity — from concrete analysis of the instance (its gold patch, its
//! tests run in its own container, its problem statement), optionally with a model's solve rate
//! and an LLM rubric.
//!
//! Every label has a `score` on SWE-bench Verified's annotation scale: **0 is best** (easy, tests
//! valid, clear) **and 3 worst**. The paper's filter, "≤ 1 on all three", is
//! `forge tasks filter --max-difficulty 1 --max-test-validity 1 --max-clarity 1`.
//!
//! ## Difficulty ([`difficulty_score`])
//!
//! From the gold patch ([`parse_patch`]): files, hunks, changed lines (added + removed) and the
//! Python functions and classes it touches (the `def`/`class` named by a hunk header's context,
//! `@@ ... @@ def name`, or by a `def`/`class` line in the hunk that encloses a changed line, by
//! indentation). Each measure gets a level, and the patch score is the highest level:
//!
//! | level | files | hunks | changed lines | functions |
//! |-------|-------|-------|---------------|-----------|
//! | 0     | ≤ 1   | ≤ 2   | ≤ 10          | ≤ 1       |
//! | 1     | ≤ 2   | ≤ 4   | ≤ 40          | ≤ 3       |
//! | 2     | ≤ 4   | ≤ 10  | ≤ 150         | ≤ 8       |
//! | 3     | more  | more  | more          | more      |
//!
//! With `--samples` (what `forge sample` writes: `attempts.jsonl` records, or `solve_rates.jsonl`
//! records, or the directory holding them) and at least [`MIN_ATTEMPTS`] attempts with a model
//! outcome, the solve rate moves the score ([`solve_rate_adjustment`]): solved by no attempt +2,
//! by fewer than 25 % +1, by 75 % or more −1; the result is clamped to 0..=3.
//!
//! ## Test validity ([`test_validity_score`])
//!
//! No FAIL_TO_PASS test: 3. Otherwise, with `--coverage on` (the default), the FAIL_TO_PASS tests
//! run in a fresh container of the instance's image, with the test patch and the gold patch
//! applied, under a line tracer (`sys.settrace`, restricted to the files the gold patch touches;
//! no `coverage` package needed), and the coverage is the share of the gold patch's executable
//! changed lines that ran:
//!
//! | coverage       | score |
//! |----------------|-------|
//! | ≥ 0.8          | 0     |
//! | ≥ 0.4          | 1     |
//! | > 0            | 2     |
//! | 0              | 3     |
//! | not measured   | 1     |
//!
//! "Not measured" is `--coverage off`, a patch with no executable changed Python line, or a
//! container failure (then `coverage_error` says why). The changed lines are the new-file line
//! numbers of the patch's `+` lines that are neither blank nor comments, and, for a run of `-`
//! lines with no `+` line, the line that now stands where they were. A changed line is
//! executable when it lies in a Python statement (see `labels/report.py`); it ran when any line
//! of that statement ran. Tests run as the instance runs them: a `test_cmd` with pytest gets the
//! FAIL_TO_PASS node ids (`coverage_scope: fail_to_pass`); another `test_cmd` runs the test
//! patch's files (`test_files`); an instance with only an `eval_script` runs that script whole
//! (`eval_script`: PASS_TO_PASS tests count too, an upper bound).
//!
//! ## Clarity ([`clarity_score`], [`combine_clarity`])
//!
//! From the problem statement: whether it names an identifier of the fix (a function or class
//! the gold patch touches, or a name on its changed lines — Python keywords, common builtins and
//! names shorter than 3 characters left out), whether it has a reproduction (a code block,
//! `>>>`, a traceback, or a call with arguments such as `f(1900)`), and its length in words.
//! Under 10 words: 3. Otherwise one point each for no identifier named, no reproduction, and
//! under 30 words (at most 3).
//!
//! With `--rubric-endpoint URL --rubric-model NAME`, an OpenAI-compatible chat-completions
//! endpoint answers SWE-bench Verified's annotation question ("how well-specified is the issue
//! text?", 0–3), stored under `clarity.rubric`; the clarity score is then the mean of the concrete
//! score and the rubric's, rounded up (a tie goes to the worse side). Without the endpoint
//! nothing networked runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use forge_sandbox::{PullPolicy, Runtime, SandboxSpec};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::ChatEndpoint;
use crate::harness::{shell_quote, GIT};
use crate::error::{Result, SweError};
use crate::harness::{instance_image, ContainerOverrides, ExecOptions};
use crate::instance::TaskInstance;

/// Attempts with a model outcome needed before a solve rate moves the difficulty.
pub const MIN_ATTEMPTS: usize = 2;

/// The three labels of one instance (the `labels` object of a labelled record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    pub difficulty: DifficultyLabel,
    pub test_validity: TestValidityLabel,
    pub clarity: ClarityLabel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DifficultyLabel {
    pub score: u8,
    pub files: usize,
    pub hunks: usize,
    pub lines_added: usize,
    pub lines_removed: usize,
    pub functions: Vec<String>,
    /// Solved attempts / attempts, from `--samples` (`None` without samples of this instance).
    pub solve_rate: Option<f64>,
    pub attempts: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestValidityLabel {
    pub score: u8,
    pub fail_to_pass: usize,
    pub pass_to_pass: usize,
    /// Changed lines of the gold patch (see the module docs).
    pub patched_lines: usize,
    /// Those in Python statements (measured in the container; `None` when not measured).
    pub patched_lines_executable: Option<usize>,
    /// Those the tests ran.
    pub patched_lines_executed: Option<usize>,
    /// executed / executable (`None` when not measured or nothing is executable).
    pub coverage: Option<f64>,
    /// Which tests ran under the tracer: `fail_to_pass`, `test_files` or `eval_script`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_scope: Option<String>,
    /// Why coverage could not be measured (container or patch failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClarityLabel {
    pub score: u8,
    pub identifiers_named: Vec<String>,
    pub identifiers_total: usize,
    pub has_reproduction: bool,
    pub words: usize,
    pub rubric: Option<RubricLabel>,
}

/// An LLM's answer to SWE-bench Verified's "how well-specified is the issue" question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricLabel {
    pub score: u8,
    pub model: String,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// The gold patch

/// What [`parse_patch`] finds in a unified diff.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PatchStats {
    pub files: Vec<String>,
    pub hunks: usize,
    pub lines_added: usize,
    pub lines_removed: usize,
    /// Python functions and classes with a changed line, in order of first appearance.
    pub functions: Vec<String>,
    /// Per file: new-file line numbers of the changed lines (see the module docs), ascending.
    pub changed_lines: BTreeMap<String, Vec<usize>>,
    /// Names on the changed lines of Python files (keywords, common builtins and names shorter
    /// than 3 characters left out; string literals and comments stripped).
    pub identifiers: BTreeSet<String>,
}

impl PatchStats {
    /// Changed lines over all files.
    pub fn patched_lines(&self) -> usize {
        self.changed_lines.values().map(Vec::len).sum()
    }
}

static HUNK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$").expect("valid regex"));
static SCOPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\s*)(?:async\s+def|def|class)\s+([A-Za-z_]\w*)").expect("valid regex"));
static IDENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z_][A-Za-z0-9_]*").expect("valid regex"));
static STRING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"#).expect("valid regex"));

/// Python keywords and builtins too common to say anything about the issue.
const COMMON_NAMES: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield", "self", "cls", "abs", "all", "any",
    "bool", "bytes", "dict", "enumerate", "filter", "float", "getattr", "hasattr", "int", "isinstance", "iter",
    "len", "list", "map", "max", "min", "next", "object", "print", "range", "repr", "reversed", "set", "setattr",
    "sorted", "str", "sum", "super", "tuple", "type", "zip", "Exception", "ValueError", "TypeError", "KeyError",
    "IndexError", "AttributeError", "RuntimeError", "NotImplementedError", "args", "kwargs",
];

fn is_python(path: &str) -> bool {
    path.ends_with(".py") || path.ends_with(".pyi")
}

/// Parses a unified diff (what `git diff` writes): files, hunks, added and removed lines, the
/// Python functions and classes touched, the changed lines' new-file numbers, the identifiers on
/// them. Hunk bodies are read by their header's line counts, so a removed line that starts with
/// `--` is not taken for a file header.
pub fn parse_patch(patch: &str) -> PatchStats {
    let mut stats = PatchStats::default();
    let mut file = String::new();
    let mut lines = patch.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            if let Some(i) = rest.rfind(" b/") {
                file = rest[i + 3..].to_string();
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("+++ ") {
            let path = rest.split('\t').next().unwrap_or(rest).trim();
            if path != "/dev/null" {
                file = path.strip_prefix("b/").unwrap_or(path).to_string();
            }
            continue;
        }
        let Some(h) = HUNK.captures(line) else { continue };
        if !stats.files.contains(&file) {
            stats.files.push(file.clone());
        }
        stats.hunks += 1;
        let count = |i: usize| h.get(i).map_or(1, |m| m.as_str().parse::<usize>().unwrap_or(0));
        let (mut old_left, mut new_left) = (count(1), count(3));
        let mut new_line: usize = h[2].parse().unwrap_or(0);
        let python = is_python(&file);
        // (indentation, name) of the def/class scopes open at this point of the hunk
        let mut scopes: Vec<(usize, String)> = Vec::new();
        if let Some(s) = SCOPE.captures(h.get(4).map_or("", |m| m.as_str())) {
            scopes.push((s[1].len(), s[2].to_string()));
        }
        let changed = stats.changed_lines.entry(file.clone()).or_default();
        let (mut run_minus, mut run_plus) = (false, false);
        while old_left > 0 || new_left > 0 {
            let Some(body) = lines.peek() else { break };
            let (kind, content) = match body.chars().next() {
                Some(c @ (' ' | '+' | '-')) => (c, &body[1..]),
                Some('\\') => {
                    lines.next();
                    continue;
                }
                // an empty context line whose leading space an editor stripped
                None => (' ', ""),
                Some(_) => break,
            };
            lines.next();
            if kind == ' ' && run_minus && !run_plus && python {
                changed.push(new_line);
            }
            if kind == ' ' {
                run_minus = false;
                run_plus = false;
            }
            let trimmed = content.trim();
            if python && !trimmed.is_empty() && !trimmed.starts_with('#') {
                let indent = content.len() - content.trim_start().len();
                while scopes.last().is_some_and(|(i, _)| *i >= indent) {
                    scopes.pop();
                }
                if let Some(s) = SCOPE.captures(content) {
                    scopes.push((indent, s[2].to_string()));
                }
                if kind != ' ' {
                    if let Some((_, name)) = scopes.last() {
                        if !stats.functions.contains(name) {
                            stats.functions.push(name.clone());
                        }
                    }
                    let code = STRING.replace_all(content.split('#').next().unwrap_or(""), "");
                    for m in IDENT.find_iter(&code) {
                        let name = m.as_str();
                        if name.len() >= 3 && !COMMON_NAMES.contains(&name) && !name.chars().all(|c| c.is_ascii_digit() || c == '_') {
                            stats.identifiers.insert(name.to_string());
                        }
                    }
                }
            }
            match kind {
                '+' => {
                    stats.lines_added += 1;
                    run_plus = true;
                    let comment = python && trimmed.starts_with('#');
                    if !trimmed.is_empty() && !comment {
                        changed.push(new_line);
                    }
                    new_line += 1;
                    new_left = new_left.saturating_sub(1);
                }
                '-' => {
                    stats.lines_removed += 1;
                    run_minus = true;
                    old_left = old_left.saturating_sub(1);
                }
                _ => {
                    new_line += 1;
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                }
            }
        }
        if run_minus && !run_plus && python {
            changed.push(new_line);
        }
    }
    for v in stats.changed_lines.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    stats.changed_lines.retain(|_, v| !v.is_empty());
    stats
}

// ---------------------------------------------------------------------------------------------
// Scores

/// How many of `limits` (ascending) `value` exceeds: 0..=3.
fn level(value: usize, limits: [usize; 3]) -> u8 {
    limits.iter().filter(|l| value > **l).count() as u8
}

/// The gold patch's size score (the table of the module docs): the highest level of files,
/// hunks, changed lines (added + removed) and functions touched.
pub fn patch_size_score(files: usize, hunks: usize, changed_lines: usize, functions: usize) -> u8 {
    [
        level(files, [1, 2, 4]),
        level(hunks, [2, 4, 10]),
        level(changed_lines, [10, 40, 150]),
        level(functions, [1, 3, 8]),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// How a solve rate over `attempts` attempts moves the difficulty: nothing under
/// [`MIN_ATTEMPTS`]; unsolved +2; under 25 % +1; 75 % or more −1.
pub fn solve_rate_adjustment(solve_rate: f64, attempts: usize) -> i8 {
    if attempts < MIN_ATTEMPTS {
        0
    } else if solve_rate <= 0.0 {
        2
    } else if solve_rate < 0.25 {
        1
    } else if solve_rate >= 0.75 {
        -1
    } else {
        0
    }
}

/// Difficulty: the patch size score moved by the solve rate (when there is one), in 0..=3.
pub fn difficulty_score(stats: &PatchStats, solve: Option<SolveStats>) -> u8 {
    let size = patch_size_score(stats.files.len(), stats.hunks, stats.lines_added + stats.lines_removed, stats.functions.len());
    let adjust = solve.map_or(0, |s| solve_rate_adjustment(s.rate(), s.attempts));
    (size as i8 + adjust).clamp(0, 3) as u8
}

/// Test validity from the FAIL_TO_PASS count and the coverage of the patched lines (the table
/// of the module docs).
pub fn test_validity_score(fail_to_pass: usize, coverage: Option<f64>) -> u8 {
    match coverage {
        _ if fail_to_pass == 0 => 3,
        None => 1,
        Some(c) if c >= 0.8 => 0,
        Some(c) if c >= 0.4 => 1,
        Some(c) if c > 0.0 => 2,
        Some(_) => 3,
    }
}

/// Concrete clarity: under 10 words 3; else a point each for no identifier of the fix named, no
/// reproduction, and under 30 words.
pub fn clarity_score(words: usize, names_identifier: bool, has_reproduction: bool) -> u8 {
    if words < 10 {
        return 3;
    }
    (u8::from(!names_identifier) + u8::from(!has_reproduction) + u8::from(words < 30)).min(3)
}

/// The clarity score with a rubric: the mean of the two, rounded up.
pub fn combine_clarity(concrete: u8, rubric: Option<u8>) -> u8 {
    rubric.map_or(concrete, |r| (concrete + r).div_ceil(2))
}

static CALL_WITH_ARGS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z_][\w.]*\([^()\s][^()]*\)").expect("valid regex"));

/// Whether the text has a reproduction: a fenced code block, a `>>>` prompt, a traceback, or a
/// call with arguments.
pub fn has_reproduction(text: &str) -> bool {
    text.contains("```") || text.contains(">>>") || text.contains("Traceback (most recent call last)") || CALL_WITH_ARGS.is_match(text)
}

/// The identifiers of the fix (functions and classes touched, names on changed lines) that
/// `text` names as whole words, sorted; and how many there are in all.
pub fn identifiers_named(stats: &PatchStats, text: &str) -> (Vec<String>, usize) {
    let words: BTreeSet<&str> = IDENT.find_iter(text).map(|m| m.as_str()).collect();
    let all: BTreeSet<&str> = stats.functions.iter().map(String::as_str).chain(stats.identifiers.iter().map(String::as_str)).collect();
    let named = all.iter().filter(|n| words.contains(**n)).map(|n| n.to_string()).collect();
    (named, all.len())
}

// ---------------------------------------------------------------------------------------------
// Solve rates from `forge sample`

/// Attempts with a model outcome and how many resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolveStats {
    pub attempts: usize,
    pub solved: usize,
}

impl SolveStats {
    pub fn rate(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.solved as f64 / self.attempts as f64
        }
    }
}

/// Reads what `forge sample` wrote: `attempts.jsonl` lines (`instance_id`, `resolved` or a
/// numeric `reward`; those with an `infra_error` are not attempts), `solve_rates.jsonl` lines
/// (`instance_id`, `attempts`, `solved`), or a sample output directory (its `attempts.jsonl`,
/// else its `solve_rates.jsonl`).
pub fn load_samples(path: &Path) -> Result<BTreeMap<String, SolveStats>> {
    let file = if path.is_dir() {
        let attempts = path.join("attempts.jsonl");
        if attempts.exists() {
            attempts
        } else {
            path.join("solve_rates.jsonl")
        }
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| SweError::io(&file, e))?;
    let mut out: BTreeMap<String, SolveStats> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |detail: String| SweError::BadRecord { path: file.clone(), line: i + 1, detail };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let id = v.get("instance_id").and_then(Value::as_str).ok_or_else(|| bad("no instance_id".into()))?;
        let entry = out.entry(id.to_string()).or_default();
        if let Some(resolved) = v.get("resolved").and_then(Value::as_bool).or_else(|| v.get("reward").and_then(Value::as_f64).map(|r| r > 0.0)) {
            if v.get("infra_error").is_some_and(|e| !e.is_null()) {
                continue;
            }
            entry.attempts += 1;
            entry.solved += usize::from(resolved);
        } else if let (Some(a), Some(s)) = (v.get("attempts").and_then(Value::as_u64), v.get("solved").and_then(Value::as_u64)) {
            entry.attempts += a as usize;
            entry.solved += s as usize;
        } else {
            return Err(bad(
                "neither an attempt record (instance_id, resolved or reward) nor a solve rate (instance_id, attempts, solved): give --samples the attempts.jsonl or solve_rates.jsonl that `forge sample` writes".into(),
            ));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Labelling

/// Options of a labelling run.
#[derive(Debug, Clone)]
pub struct LabelOptions {
    /// Measure the FAIL_TO_PASS tests' coverage of the patched lines in Docker.
    pub coverage: bool,
    /// Instances labelled at once (one container each).
    pub workers: usize,
    /// Limit of one instance's test run under the tracer.
    pub timeout: Duration,
    /// Solve rates per instance id (`--samples`).
    pub samples: BTreeMap<String, SolveStats>,
    pub rubric: Option<ChatEndpoint>,
    /// Labels on every container (tests check for leaks with them).
    pub container_labels: BTreeMap<String, String>,
    pub pull: PullPolicy,
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions {
            coverage: true,
            workers: 2,
            timeout: Duration::from_secs(600),
            samples: BTreeMap::new(),
            rubric: None,
            container_labels: BTreeMap::new(),
            pull: PullPolicy::Missing,
        }
    }
}

/// The labels that need neither Docker nor network: coverage not measured, no rubric.
pub fn static_labels(inst: &TaskInstance, solve: Option<SolveStats>) -> Labels {
    let stats = parse_patch(&inst.patch);
    let f2p = inst.fail_to_pass.len();
    let (named, total) = identifiers_named(&stats, &inst.problem_statement);
    let words = inst.problem_statement.split_whitespace().count();
    let repro = has_reproduction(&inst.problem_statement);
    Labels {
        difficulty: DifficultyLabel {
            score: difficulty_score(&stats, solve),
            files: stats.files.len(),
            hunks: stats.hunks,
            lines_added: stats.lines_added,
            lines_removed: stats.lines_removed,
            functions: stats.functions.clone(),
            solve_rate: solve.map(|s| s.rate()),
            attempts: solve.map_or(0, |s| s.attempts),
        },
        test_validity: TestValidityLabel {
            score: test_validity_score(f2p, None),
            fail_to_pass: f2p,
            pass_to_pass: inst.pass_to_pass.len(),
            patched_lines: stats.patched_lines(),
            patched_lines_executable: None,
            patched_lines_executed: None,
            coverage: None,
            coverage_scope: None,
            coverage_error: None,
        },
        clarity: ClarityLabel {
            score: clarity_score(words, !named.is_empty(), repro),
            identifiers_named: named,
            identifiers_total: total,
            has_reproduction: repro,
            words,
            rubric: None,
        },
    }
}

/// Labels `instances` (in order). With `opts.coverage`, `rt` must be given: each instance's
/// tests run in a fresh container, `opts.workers` at a time; a container or patch failure is
/// recorded as the instance's `coverage_error` (the run goes on). A rubric endpoint failure is
/// an error.
pub async fn label_instances(rt: Option<&Runtime>, instances: &[TaskInstance], opts: &LabelOptions) -> Result<Vec<Labels>> {
    let rt = match (opts.coverage, rt) {
        (true, None) => return Err(SweError::CoverageNeedsDocker("no Docker runtime given".into())),
        (true, Some(rt)) => Some(rt.clone()),
        (false, _) => None,
    };
    let client = match &opts.rubric {
        Some(ep) => Some(rubric_client(ep)?),
        None => None,
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.workers.max(1)));
    let opts = Arc::new(opts.clone());
    let mut set = tokio::task::JoinSet::new();
    for (idx, inst) in instances.iter().cloned().enumerate() {
        let (rt, sem, opts, client) = (rt.clone(), sem.clone(), opts.clone(), client.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            (idx, label_one(rt.as_ref(), client.as_ref(), &inst, &opts).await)
        });
    }
    let mut out: Vec<Option<Labels>> = vec![None; instances.len()];
    while let Some(joined) = set.join_next().await {
        let (idx, labels) = joined.map_err(|e| SweError::Invalid(format!("a labelling task panicked: {e}")))?;
        out[idx] = Some(labels?);
    }
    Ok(out.into_iter().map(|l| l.expect("every instance labelled")).collect())
}

async fn label_one(rt: Option<&Runtime>, client: Option<&reqwest::Client>, inst: &TaskInstance, opts: &LabelOptions) -> Result<Labels> {
    let mut labels = static_labels(inst, opts.samples.get(&inst.instance_id).copied());
    if let Some(rt) = rt {
        let stats = parse_patch(&inst.patch);
        let tv = &mut labels.test_validity;
        if !inst.fail_to_pass.is_empty() {
            match measure_coverage(rt, inst, &stats, opts).await {
                Ok(m) => {
                    tv.patched_lines_executable = Some(m.executable);
                    tv.patched_lines_executed = Some(m.executed);
                    tv.coverage = (m.executable > 0).then(|| m.executed as f64 / m.executable as f64);
                    tv.coverage_scope = Some(m.scope.to_string());
                }
                Err(e) => tv.coverage_error = Some(e.to_string()),
            }
        }
        tv.score = test_validity_score(tv.fail_to_pass, tv.coverage);
    }
    if let (Some(ep), Some(client)) = (&opts.rubric, client) {
        let rubric = ask_rubric(client, ep, inst).await?;
        labels.clarity.score = combine_clarity(labels.clarity.score, Some(rubric.score));
        labels.clarity.rubric = Some(rubric);
    }
    Ok(labels)
}

// ---------------------------------------------------------------------------------------------
// Coverage in the instance's container

/// The tracer installed in the image's site-packages (see the file).
pub const TRACER_PY: &str = include_str!("labels/tracer.py");
/// The script that maps the trace to the patched lines (see the file).
pub const REPORT_PY: &str = include_str!("labels/report.py");

/// What the FAIL_TO_PASS tests ran of the patched lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    pub executable: usize,
    pub executed: usize,
    /// Per file: the executable changed lines that ran.
    pub executed_lines: BTreeMap<String, Vec<usize>>,
    pub scope: &'static str,
}

const TRACE_DIR: &str = "/tmp/forge-trace";
const COVERAGE_ERROR: &str = "FORGE_COVERAGE_ERROR:";

/// Which tests the coverage run runs (see the module docs).
pub fn coverage_scope(inst: &TaskInstance) -> &'static str {
    match inst.test_cmd.as_deref() {
        Some(cmd) if cmd.contains("pytest") => "fail_to_pass",
        Some(_) => "test_files",
        None => "eval_script",
    }
}

/// The bash script of a coverage run, in a fresh container of the instance's image: the start
/// state, the gold patch (`/tmp/forge-gold.diff`), the test patch, the tracer, the tests
/// ([`coverage_scope`]), then the report (`/tmp/forge-coverage.json`). A failure before the tests
/// prints [`COVERAGE_ERROR`] and exits 3; the tests' own exit status does not matter.
pub fn coverage_script(inst: &TaskInstance, stats: &PatchStats) -> Result<String> {
    let mut s = String::from("#!/bin/bash\nset -uo pipefail\ncd /testbed\n");
    s.push_str(&format!("fail() {{ echo \"{COVERAGE_ERROR} $*\"; exit 3; }}\n"));
    if let Some(init) = &inst.shell_init {
        s.push_str(&format!("{init}\n"));
    }
    let start = inst.start_ref();
    if start != "HEAD" {
        let q = shell_quote(start);
        s.push_str(&format!("{GIT} checkout -qf {q} && {GIT} clean -fdq || fail 'could not check out the start state {start}'\n"));
    }
    s.push_str(&format!(
        "{{ {GIT} apply --verbose /tmp/forge-gold.diff || {GIT} apply --verbose --reject /tmp/forge-gold.diff \
         || patch --batch --fuzz=5 -p1 -i /tmp/forge-gold.diff; }} || fail 'the gold patch does not apply'\n"
    ));
    let scope = coverage_scope(inst);
    let test_files: Vec<String> = inst.test_files().iter().map(|f| shell_quote(f)).collect();
    let run_tests = match (scope, inst.test_cmd.as_deref()) {
        ("eval_script", _) => {
            crate::resolve::check_runnable(inst).map_err(SweError::Invalid)?;
            if inst.eval_script.as_deref().is_none_or(|e| e.trim().is_empty()) {
                return Err(SweError::Invalid(format!("instance {} has neither test_cmd nor eval_script: nothing runs its tests", inst.instance_id)));
            }
            "bash /tmp/forge-eval.sh".to_string()
        }
        (_, Some(cmd)) => {
            if let Some(tests_ref) = &inst.tests_ref {
                let (base, r) = (&inst.base_commit, shell_quote(tests_ref));
                s.push_str(&format!(
                    "{GIT} diff --name-only -z {base} {r} | while IFS= read -r -d '' f; do\n  \
                     if {GIT} cat-file -e {r}:\"$f\" 2>/dev/null; then {GIT} checkout -q {r} -- \"$f\"; else rm -f -- \"$f\"; fi\ndone\n"
                ));
            }
            if !inst.test_patch.trim().is_empty() {
                s.push_str(&format!("{GIT} apply --verbose /tmp/forge-test.diff || fail 'the test patch does not apply'\n"));
            }
            let args = if scope == "fail_to_pass" { runnable_test_ids(&inst.fail_to_pass).iter().map(|t| shell_quote(t)).collect::<Vec<_>>() } else { test_files };
            // pytest-cov (a project's `addopts = --cov ...`) would replace the tracer with
            // coverage.py's own: `--no-cov` where it is installed.
            format!("{cmd} $no_cov {}", args.join(" "))
        }
        _ => unreachable!("a scope other than eval_script has a test_cmd"),
    };
    let files: Vec<String> = stats.changed_lines.keys().filter(|f| is_python(f)).map(|f| format!("/testbed/{f}")).collect();
    s.push_str(
        "installed=\n\
         for py in python3 python; do\n  \
           command -v \"$py\" >/dev/null 2>&1 || continue\n  \
           d=$(\"$py\" -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])') || continue\n  \
           mkdir -p \"$d\" && cp /tmp/forge_trace.py \"$d/forge_trace.py\" && echo 'import forge_trace' > \"$d/forge_trace.pth\" && installed=$py\n\
         done\n\
         [ -n \"$installed\" ] || fail 'no python3 on the PATH to install the line tracer in'\n\
         no_cov=\n\
         \"$installed\" -c 'import pytest_cov' >/dev/null 2>&1 && no_cov=--no-cov\n",
    );
    s.push_str(&format!(
        "rm -rf {TRACE_DIR} && mkdir -p {TRACE_DIR}\n\
         FORGE_TRACE_OUT={TRACE_DIR} FORGE_TRACE_FILES={} {run_tests}\n\
         echo \"tests exit status $?\"\n\
         \"$installed\" /tmp/forge_trace_report.py /tmp/forge-lines.json {TRACE_DIR} /testbed > /tmp/forge-coverage.json || fail 'the coverage report failed'\n",
        shell_quote(&files.join(":")),
    ));
    Ok(s)
}

/// Test ids pytest can select: the log parsers (like the official ones) cut a parametrized id
/// at its first space (`test_f[-1.3--1 3/10]` is recorded as `test_f[-1.3--1`), which selects
/// nothing; such an id runs as its whole function (`test_f`). Order kept, duplicates dropped.
fn runnable_test_ids(ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        let id = match id.find('[') {
            Some(i) if !id.ends_with(']') => &id[..i],
            _ => id.as_str(),
        };
        if !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    }
    out
}

/// Runs `inst`'s tests under the line tracer in a fresh container (see [`coverage_script`]).
pub async fn measure_coverage(rt: &Runtime, inst: &TaskInstance, stats: &PatchStats, opts: &LabelOptions) -> Result<Coverage> {
    let script = coverage_script(inst, stats)?;
    let image = instance_image(inst, &ExecOptions::default())?;
    rt.ensure_image(&image, opts.pull, |_| {}).await.map_err(|e| {
        let fix = crate::resolve::Source::of(inst).image_fix(&image);
        SweError::Invalid(format!("image missing: {image} ({e}); {fix}"))
    })?;
    let overrides = ContainerOverrides::default();
    let mut spec = SandboxSpec::new(image).workdir("/testbed").limits(overrides.limits_for(inst));
    spec.network = overrides.eval_network_for(inst);
    spec.default_timeout = opts.timeout;
    spec.max_call_timeout = spec.max_call_timeout.max(opts.timeout);
    spec.max_output_bytes = 1 << 20;
    for (k, v) in &opts.container_labels {
        spec = spec.label(k, v);
    }
    let mut sb = rt.create(&spec).await?;
    let result = run_coverage(&sb, inst, stats, &script, opts.timeout).await;
    let _ = sb.remove().await;
    result
}

async fn run_coverage(sb: &forge_sandbox::Sandbox, inst: &TaskInstance, stats: &PatchStats, script: &str, timeout: Duration) -> Result<Coverage> {
    let with_newline = |p: &str| {
        let mut d = p.as_bytes().to_vec();
        if !d.ends_with(b"\n") {
            d.push(b'\n');
        }
        d
    };
    let python_lines: BTreeMap<&String, &Vec<usize>> = stats.changed_lines.iter().filter(|(f, _)| is_python(f)).collect();
    sb.write_file("/tmp/forge-gold.diff", &with_newline(&inst.patch), 0o644).await?;
    sb.write_file("/tmp/forge-test.diff", &with_newline(&inst.test_patch), 0o644).await?;
    sb.write_file("/tmp/forge-eval.sh", inst.eval_script.as_deref().unwrap_or("").as_bytes(), 0o755).await?;
    sb.write_file("/tmp/forge_trace.py", TRACER_PY.as_bytes(), 0o644).await?;
    sb.write_file("/tmp/forge_trace_report.py", REPORT_PY.as_bytes(), 0o644).await?;
    sb.write_file("/tmp/forge-lines.json", json!(python_lines).to_string().as_bytes(), 0o644).await?;
    sb.write_file("/tmp/forge-coverage.sh", script.as_bytes(), 0o755).await?;
    let o = sb.exec(&["bash", "/tmp/forge-coverage.sh"], Some(timeout)).await?;
    let tail = |s: &str| {
        let s = s.trim();
        let cut = s.char_indices().rev().nth(1500).map_or(0, |(i, _)| i);
        s[cut..].to_string()
    };
    if o.timed_out {
        return Err(SweError::Invalid(format!("the tests under the tracer ran past {} s (raise --timeout)", timeout.as_secs())));
    }
    if let Some(line) = o.output.lines().find(|l| l.starts_with(COVERAGE_ERROR)) {
        return Err(SweError::Invalid(format!("{}; output: {}", line[COVERAGE_ERROR.len()..].trim(), tail(&o.output))));
    }
    if o.exit_code != Some(0) {
        return Err(SweError::Invalid(format!("the coverage run exited with {:?}: {}", o.exit_code, tail(&o.output))));
    }
    let (bytes, _) = sb.read_file("/tmp/forge-coverage.json", 16 << 20).await?;
    let report: BTreeMap<String, FileCoverage> = serde_json::from_slice(&bytes)
        .map_err(|e| SweError::Invalid(format!("unreadable coverage report ({e}): {}", String::from_utf8_lossy(&bytes))))?;
    let mut cov = Coverage { executable: 0, executed: 0, executed_lines: BTreeMap::new(), scope: coverage_scope(inst) };
    for (file, fc) in report {
        cov.executable += fc.executable.len();
        cov.executed += fc.executed.len();
        if !fc.executed.is_empty() {
            cov.executed_lines.insert(file, fc.executed);
        }
    }
    Ok(cov)
}

#[derive(Deserialize)]
struct FileCoverage {
    executable: Vec<usize>,
    executed: Vec<usize>,
}

// ---------------------------------------------------------------------------------------------
// The rubric

/// SWE-bench Verified's annotation question on the issue, as the rubric asks it.
pub const RUBRIC_PROMPT: &str = "You are annotating a GitHub issue for a software-engineering benchmark, as in SWE-bench Verified. \
Imagine you are an experienced software engineer who has been asked to create a pull request that successfully solves the issue below; \
you have full access to the repository but not to the tests. How well-specified is the issue text?\n\
0: The issue is well-specified and it is clear what is required for a successful solution.\n\
1: There are some blanks to fill in about the issue, but there is a sensible interpretation of what is required for a successful solution.\n\
2: The issue is vague and there is room for ambiguity. It is unclear what a successful solution would look like.\n\
3: It is almost impossible to understand what you are being asked to do without further information.\n\
Answer with one JSON object and nothing else: {\"score\": <0-3>, \"reason\": \"<one sentence>\"}";

static SCORE_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)score\W{0,5}([0-3])\b").expect("valid regex"));

/// The score (0..=3) and reason in a rubric reply: a JSON object with `score` (anywhere in the
/// text), else `score: N`, else a reply that is a lone digit.
pub fn parse_rubric_reply(text: &str) -> Option<(u8, String)> {
    if let (Some(a), Some(b)) = (text.find('{'), text.rfind('}')) {
        if let Ok(v) = serde_json::from_str::<Value>(&text[a..=b]) {
            let score = v.get("score").and_then(|s| s.as_u64().or_else(|| s.as_str().and_then(|s| s.trim().parse().ok())));
            if let Some(score @ 0..=3) = score {
                let reason = v.get("reason").and_then(Value::as_str).unwrap_or("").to_string();
                return Some((score as u8, reason));
            }
        }
    }
    if let Some(c) = SCORE_WORD.captures(text) {
        return Some((c[1].parse().ok()?, text.trim().to_string()));
    }
    match text.trim() {
        d @ ("0" | "1" | "2" | "3") => Some((d.parse().ok()?, String::new())),
        _ => None,
    }
}

fn rubric_client(ep: &ChatEndpoint) -> Result<reqwest::Client> {
    ep.client().map_err(|detail| SweError::Rubric { endpoint: ep.chat_url(), detail })
}

/// Asks the rubric endpoint about `inst`'s problem statement (temperature 0; an unreadable
/// answer is asked once more).
pub async fn ask_rubric(client: &reqwest::Client, ep: &ChatEndpoint, inst: &TaskInstance) -> Result<RubricLabel> {
    let user = format!("Repository: {}\n\nIssue:\n{}", inst.repo, inst.problem_statement);
    let mut last = String::new();
    for _ in 0..2 {
        match ep.complete(client, RUBRIC_PROMPT, &user, 512).await {
            Ok(content) => match parse_rubric_reply(&content) {
                Some((score, reason)) => return Ok(RubricLabel { score, model: ep.model.clone(), reason }),
                None => last = format!("no 0-3 score in the answer: {}", content.chars().take(500).collect::<String>()),
            },
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    Err(SweError::Rubric { endpoint: ep.chat_url(), detail: format!("instance {}: {last}", inst.instance_id) })
}

// ---------------------------------------------------------------------------------------------
// Distribution, files

/// Counts of scores 0..=3 per label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Distribution {
    pub difficulty: [usize; 4],
    pub test_validity: [usize; 4],
    pub clarity: [usize; 4],
}

impl Distribution {
    pub fn add(&mut self, l: &Labels) {
        self.difficulty[l.difficulty.score.min(3) as usize] += 1;
        self.test_validity[l.test_validity.score.min(3) as usize] += 1;
        self.clarity[l.clarity.score.min(3) as usize] += 1;
    }

    pub fn of<'a>(labels: impl IntoIterator<Item = &'a Labels>) -> Self {
        let mut d = Distribution::default();
        for l in labels {
            d.add(l);
        }
        d
    }
}

impl fmt::Display for Distribution {
    /// A table: one row per label, the counts of scores 0, 1, 2, 3.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<14} {:>5} {:>5} {:>5} {:>5}", "label", "0", "1", "2", "3")?;
        for (name, row) in [("difficulty", self.difficulty), ("test_validity", self.test_validity), ("clarity", self.clarity)] {
            writeln!(f, "{name:<14} {:>5} {:>5} {:>5} {:>5}", row[0], row[1], row[2], row[3])?;
        }
        Ok(())
    }
}

/// What [`label_file`] did.
#[derive(Debug, Clone)]
pub struct LabelSummary {
    pub instances: usize,
    pub distribution: Distribution,
    /// (instance id, why) of the instances whose coverage could not be measured.
    pub coverage_errors: Vec<(String, String)>,
}

/// `forge tasks label`: labels the instances of `dataset` (parquet, JSONL, JSON) and writes each
/// record with its `labels` to `out` as JSONL. With coverage, connects to Docker (an error naming
/// `--coverage off` when it cannot) and builds missing bundled images.
pub async fn label_file(dataset: &Path, out: &Path, opts: &LabelOptions) -> Result<LabelSummary> {
    let instances = crate::load_instances(dataset)?;
    let rt = if opts.coverage {
        let rt = Runtime::connect().await.map_err(|e| SweError::CoverageNeedsDocker(e.to_string()))?;
        rt.ping(Duration::from_secs(10)).await.map_err(SweError::CoverageNeedsDocker)?;
        crate::harness::ensure_bundled_images(&rt, dataset, &instances).await;
        Some(rt)
    } else {
        None
    };
    let labels = label_instances(rt.as_ref(), &instances, opts).await?;
    write_labelled(out, &instances, &labels)?;
    let coverage_errors = instances
        .iter()
        .zip(&labels)
        .filter_map(|(i, l)| l.test_validity.coverage_error.clone().map(|e| (i.instance_id.clone(), e)))
        .collect();
    Ok(LabelSummary { instances: instances.len(), distribution: Distribution::of(&labels), coverage_errors })
}

/// Writes `instances` with their `labels` as JSONL (the records as forge reads them, so later
/// commands load them unchanged).
pub fn write_labelled(out: &Path, instances: &[TaskInstance], labels: &[Labels]) -> Result<()> {
    let mut text = String::new();
    for (inst, l) in instances.iter().zip(labels) {
        let mut inst = inst.clone();
        inst.extra.insert("labels".into(), serde_json::to_value(l).expect("labels serialize"));
        text.push_str(&serde_json::to_string(&inst).expect("instances serialize"));
        text.push('\n');
    }
    std::fs::write(out, text).map_err(|e| SweError::io(out, e))
}

/// The labels of a labelled record (`None`: it has none).
pub fn labels_of(inst: &TaskInstance) -> Option<std::result::Result<Labels, serde_json::Error>> {
    inst.extra.get("labels").map(|v| serde_json::from_value(v.clone()))
}

/// The highest score kept per label (`None`: any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Thresholds {
    pub difficulty: Option<u8>,
    pub test_validity: Option<u8>,
    pub clarity: Option<u8>,
}

impl Thresholds {
    pub fn keeps(&self, l: &Labels) -> bool {
        let ok = |max: Option<u8>, score: u8| max.is_none_or(|m| score <= m);
        ok(self.difficulty, l.difficulty.score) && ok(self.test_validity, l.test_validity.score) && ok(self.clarity, l.clarity.score)
    }
}

/// What [`filter_file`] did.
#[derive(Debug, Clone)]
pub struct FilterSummary {
    pub kept: usize,
    pub dropped: usize,
    /// Of the input.
    pub distribution: Distribution,
    pub kept_distribution: Distribution,
}

/// `forge tasks filter`: keeps the labelled records of `dataset` whose scores are within
/// `thresholds`, written to `out` as JSONL. A record without labels is an error naming
/// `forge tasks label`.
pub fn filter_file(dataset: &Path, out: &Path, thresholds: &Thresholds) -> Result<FilterSummary> {
    let instances = crate::load_instances(dataset)?;
    let mut kept = Vec::new();
    let (mut all, mut kept_labels) = (Vec::new(), Vec::new());
    for inst in instances {
        let labels = match labels_of(&inst) {
            None => return Err(SweError::Unlabelled { path: dataset.to_path_buf(), instance_id: inst.instance_id }),
            Some(Err(e)) => {
                return Err(SweError::BadFile {
                    path: dataset.to_path_buf(),
                    detail: format!("instance {}: its labels are not forge's ({e}); label it again with `forge tasks label`", inst.instance_id),
                })
            }
            Some(Ok(l)) => l,
        };
        if thresholds.keeps(&labels) {
            kept_labels.push(labels.clone());
            kept.push(inst);
        }
        all.push(labels);
    }
    crate::save_instances_jsonl(out, &kept)?;
    Ok(FilterSummary {
        kept: kept.len(),
        dropped: all.len() - kept.len(),
        distribution: Distribution::of(&all),
        kept_distribution: Distribution::of(&kept_labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAP: &str = "diff --git a/calutil/leap.py b/calutil/leap.py\nindex 415c1e3..89af597 100644\n--- a/calutil/leap.py\n+++ b/calutil/leap.py\n@@ -5,7 +5,7 @@ _DAYS = [31, 28]\n \n def is_leap(year):\n     \"\"\"Every 4th year.\"\"\"\n-    return year % 4 == 0\n+    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n \n \n def days_in_month(year, month):\n";

    #[test]
    fn a_one_line_fix_is_parsed() {
        let s = parse_patch(LEAP);
        assert_eq!(s.files, ["calutil/leap.py"]);
        assert_eq!((s.hunks, s.lines_added, s.lines_removed), (1, 1, 1));
        assert_eq!(s.functions, ["is_leap"]);
        assert_eq!(s.changed_lines["calutil/leap.py"], [8]);
        assert!(s.identifiers.contains("year"));
        assert_eq!(s.patched_lines(), 1);
        assert_eq!(difficulty_score(&s, None), 0);
    }

    #[test]
    fn the_hunk_header_names_the_enclosing_function_and_defs_in_the_hunk_take_over() {
        let p = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -10,6 +10,8 @@ class Parser:\n     def feed(self, data):\n-        self.buf += data\n+        self.buf += data.decode()\n \n     def close(self):\n+        # flush first\n+        self.flush()\n         return self.buf\n \n";
        let s = parse_patch(p);
        assert_eq!(s.functions, ["feed", "close"]);
        // new lines: 10 feed, 11 changed, 12 blank, 13 close, 14 comment (skipped), 15 flush
        assert_eq!(s.changed_lines["m.py"], [11, 15]);
        assert!(s.identifiers.contains("decode") && s.identifiers.contains("flush"));
        assert!(!s.identifiers.contains("self"), "common names are left out");
        // a header that is not a def: module level until a def appears
        let p = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,3 @@ import os\n X = 1\n-Y = 2\n+Y = 3\n Z = 4\n";
        let s = parse_patch(p);
        assert!(s.functions.is_empty());
        assert_eq!(s.changed_lines["m.py"], [2]);
        // indentation closes a scope: a change at module level after a def is not the def's
        let p = "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,3 @@\n def f():\n     return 1\n-A = 1\n+A = 2\n";
        let s = parse_patch(p);
        assert!(s.functions.is_empty(), "{:?}", s.functions);
        assert_eq!(s.files, ["m.py"], "a patch without diff --git headers names files by +++");
    }

    #[test]
    fn deletions_mark_the_line_that_stands_in_their_place_and_removed_dashes_are_not_headers() {
        let p = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1,4 +1,2 @@\n def f(x):\n-    if x:\n---x\n     return x\n";
        let s = parse_patch(p);
        assert_eq!((s.lines_added, s.lines_removed, s.hunks), (0, 2, 1));
        assert_eq!(s.changed_lines["m.py"], [2]);
        assert_eq!(s.functions, ["f"]);
        // two files, a new file, a "\ No newline" marker, a non-Python file
        let p = "diff --git a/a.py b/a.py\nnew file mode 100644\n--- /dev/null\n+++ b/a.py\n@@ -0,0 +1,2 @@\n+def g():\n+    return 2\n\\ No newline at end of file\ndiff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-old\n+# new\n";
        let s = parse_patch(p);
        assert_eq!(s.files, ["a.py", "README.md"]);
        assert_eq!(s.changed_lines["a.py"], [1, 2]);
        assert_eq!(s.changed_lines["README.md"], [1], "a # line is a comment only in Python");
        assert_eq!(s.functions, ["g"]);
    }

    #[test]
    fn size_levels_follow_the_documented_table() {
        assert_eq!(patch_size_score(1, 2, 10, 1), 0);
        assert_eq!(patch_size_score(1, 1, 11, 1), 1);
        assert_eq!(patch_size_score(2, 4, 40, 3), 1);
        assert_eq!(patch_size_score(1, 3, 2, 0), 1);
        assert_eq!(patch_size_score(3, 1, 5, 1), 2);
        assert_eq!(patch_size_score(1, 1, 150, 1), 2);
        assert_eq!(patch_size_score(1, 1, 151, 1), 3);
        assert_eq!(patch_size_score(5, 1, 5, 1), 3);
        assert_eq!(patch_size_score(1, 11, 5, 1), 3);
        assert_eq!(patch_size_score(1, 1, 5, 9), 3);
    }

    #[test]
    fn solve_rates_move_difficulty_within_bounds() {
        let s = parse_patch(LEAP);
        let st = |attempts, solved| Some(SolveStats { attempts, solved });
        assert_eq!(solve_rate_adjustment(0.0, 1), 0, "one attempt says too little");
        assert_eq!(difficulty_score(&s, st(8, 0)), 2);
        assert_eq!(difficulty_score(&s, st(8, 1)), 1);
        assert_eq!(difficulty_score(&s, st(8, 4)), 0);
        assert_eq!(difficulty_score(&s, st(8, 8)), 0, "clamped at 0");
        assert_eq!(solve_rate_adjustment(0.75, 4), -1);
        assert_eq!(solve_rate_adjustment(0.5, 4), 0);
        let mut big = s.clone();
        big.lines_added = 200;
        assert_eq!(difficulty_score(&big, st(8, 0)), 3, "clamped at 3");
        assert_eq!(difficulty_score(&big, st(8, 8)), 2);
    }

    #[test]
    fn test_validity_follows_the_documented_table() {
        assert_eq!(test_validity_score(0, Some(1.0)), 3);
        assert_eq!(test_validity_score(2, None), 1);
        assert_eq!(test_validity_score(2, Some(0.8)), 0);
        assert_eq!(test_validity_score(2, Some(0.79)), 1);
        assert_eq!(test_validity_score(2, Some(0.4)), 1);
        assert_eq!(test_validity_score(2, Some(0.39)), 2);
        assert_eq!(test_validity_score(2, Some(0.01)), 2);
        assert_eq!(test_validity_score(2, Some(0.0)), 3);
    }

    #[test]
    fn clarity_counts_names_reproductions_and_words() {
        assert_eq!(clarity_score(9, true, true), 3);
        assert_eq!(clarity_score(30, true, true), 0);
        assert_eq!(clarity_score(29, true, true), 1);
        assert_eq!(clarity_score(30, false, true), 1);
        assert_eq!(clarity_score(20, false, false), 3);
        assert_eq!(combine_clarity(0, Some(1)), 1, "ties go to the worse side");
        assert_eq!(combine_clarity(2, Some(0)), 1);
        assert_eq!(combine_clarity(3, Some(3)), 3);
        assert_eq!(combine_clarity(2, None), 2);
        assert!(has_reproduction("`calutil.is_leap(1900)` is True"));
        assert!(has_reproduction("```python\nx\n```"));
        assert!(has_reproduction(">>> f()"));
        assert!(has_reproduction("Traceback (most recent call last):\n  File"));
        assert!(!has_reproduction("It fails (sometimes) when called with no arguments: f()"));
        let s = parse_patch(LEAP);
        let (named, total) = identifiers_named(&s, "is_leap(1900) returns True; the year is wrong");
        assert_eq!(named, ["is_leap", "year"]);
        assert_eq!(total, 2);
        let (named, _) = identifiers_named(&s, "is_leapfrog is fine");
        assert!(named.is_empty(), "whole words only");
    }

    #[test]
    fn static_labels_of_a_clear_one_line_fix() {
        let inst: TaskInstance = serde_json::from_value(json!({
            "repo": "forge/calutil", "instance_id": "x-1", "base_commit": "abc", "patch": LEAP,
            "problem_statement": "is_leap(1900) returns True\n\n`calutil.is_leap(1900)` is `True` and `days_in_month(1900, 2)` is 29. 1900 was not a leap year (centuries are leap years only when divisible by 400; 2000 was). We hit this when computing historical interest over the 1900s.",
            "FAIL_TO_PASS": ["t::a", "t::b"], "PASS_TO_PASS": ["t::c"],
        }))
        .unwrap();
        let l = static_labels(&inst, None);
        assert_eq!((l.difficulty.score, l.test_validity.score, l.clarity.score), (0, 1, 0));
        assert_eq!((l.test_validity.fail_to_pass, l.test_validity.pass_to_pass, l.test_validity.patched_lines), (2, 1, 1));
        assert_eq!(l.difficulty.solve_rate, None);
        assert!(l.clarity.has_reproduction);
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["difficulty"]["functions"], json!(["is_leap"]));
        assert!(v["test_validity"]["coverage"].is_null() && v["clarity"]["rubric"].is_null());
        assert_eq!(serde_json::from_value::<Labels>(v).unwrap(), l);
    }

    #[test]
    fn truncated_parametrized_ids_run_as_their_function() {
        let ids: Vec<String> = ["t.py::f[-1.3--1", "t.py::f[-2.5--2", "t.py::g[a]", "t.py::h"].iter().map(|s| s.to_string()).collect();
        assert_eq!(runnable_test_ids(&ids), vec!["t.py::f", "t.py::g[a]", "t.py::h"]);
    }

    #[test]
    fn rubric_replies_are_parsed_leniently_but_only_0_to_3() {
        assert_eq!(parse_rubric_reply("{\"score\": 1, \"reason\": \"blanks\"}"), Some((1, "blanks".into())));
        assert_eq!(parse_rubric_reply("Sure.\n```json\n{\"score\": \"2\"}\n```").map(|r| r.0), Some(2));
        assert_eq!(parse_rubric_reply("Score: 3").map(|r| r.0), Some(3));
        assert_eq!(parse_rubric_reply(" 0\n").map(|r| r.0), Some(0));
        assert_eq!(parse_rubric_reply("{\"score\": 7}"), None);
        assert_eq!(parse_rubric_reply("I cannot tell"), None);
    }

    #[test]
    fn samples_are_read_from_attempts_or_solve_rates() {
        let dir = tempfile::tempdir().unwrap();
        let attempts = dir.path().join("attempts.jsonl");
        std::fs::write(
            &attempts,
            "{\"instance_id\":\"a\",\"attempt\":0,\"resolved\":true,\"infra_error\":null}\n\
             {\"instance_id\":\"a\",\"attempt\":1,\"resolved\":false,\"infra_error\":null}\n\
             {\"instance_id\":\"a\",\"attempt\":2,\"resolved\":false,\"infra_error\":\"engine down\"}\n\
             {\"instance_id\":\"b\",\"reward\":1.0}\n",
        )
        .unwrap();
        let s = load_samples(dir.path()).unwrap();
        assert_eq!(s["a"], SolveStats { attempts: 2, solved: 1 });
        assert_eq!(s["b"], SolveStats { attempts: 1, solved: 1 });
        let rates = dir.path().join("solve_rates.jsonl");
        std::fs::write(&rates, "{\"instance_id\":\"c\",\"attempts\":8,\"solved\":2,\"solve_rate\":0.25,\"infra_errors\":0}\n").unwrap();
        assert_eq!(load_samples(&rates).unwrap()["c"], SolveStats { attempts: 8, solved: 2 });
        std::fs::write(&rates, "{\"instance_id\":\"c\"}\n").unwrap();
        let e = load_samples(&rates).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("forge sample"), "{e}");
    }

    #[test]
    fn the_coverage_script_runs_the_fail_to_pass_ids_under_the_tracer() {
        let inst: TaskInstance = serde_json::from_value(json!({
            "repo": "r", "instance_id": "x-1", "base_commit": "abc", "patch": LEAP,
            "test_patch": "diff --git a/tests/test_leap.py b/tests/test_leap.py\n",
            "FAIL_TO_PASS": ["tests/test_leap.py::test_c[it's]"], "PASS_TO_PASS": [],
            "test_cmd": "pytest -rA", "image": "img", "shell_init": "source /env",
        }))
        .unwrap();
        let s = coverage_script(&inst, &parse_patch(LEAP)).unwrap();
        assert!(s.contains("source /env\n"));
        assert!(s.contains("checkout -qf 'abc'"), "test_cmd tasks start at base_commit");
        assert!(s.contains("FORGE_TRACE_FILES='/testbed/calutil/leap.py' pytest -rA $no_cov 'tests/test_leap.py::test_c[it'\\''s]'\n"), "{s}");
        assert!(s.contains("-c 'import pytest_cov' >/dev/null 2>&1 && no_cov=--no-cov\n"), "pytest-cov would replace the tracer: {s}");
        assert!(s.find("forge-gold.diff").unwrap() < s.find("forge-test.diff").unwrap());
        assert_eq!(coverage_scope(&inst), "fail_to_pass");
    }
}
