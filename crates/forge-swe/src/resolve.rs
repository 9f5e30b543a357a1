//! One resolver from the records of the datasets people evaluate and train on to runnable tasks:
//! SWE-bench (as the hub ships it: no `eval_script`, no `image`), SWE-Gym, SWE-smith, R2E-Gym,
//! SWE-rebench, and forge's own schema. Every loader of tasks (eval, sample, RL, validate) goes
//! through it, so a record means the same thing everywhere; `forge tasks resolve --out` writes
//! what it decided for inspection.
//!
//! A resolved task names its image, how a fresh container reaches the start state
//! ([`TaskInstance::start_ref`]), the environment its shells activate
//! ([`TaskInstance::shell_init`]), its eval script (or the test command forge writes a hardened
//! script around), its log parser and its FAIL_TO_PASS / PASS_TO_PASS tests.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::instance::TaskInstance;
use crate::specs;

/// Activation of the conda environment `testbed` that SWE-bench-style images (SWE-bench, SWE-Gym,
/// SWE-smith, SWE-rebench) install and activate only from `/root/.bashrc`.
pub const CONDA_TESTBED: &str = "source /opt/miniconda3/bin/activate && conda activate testbed";

/// SWE-smith's test command (its repository profiles' pytest form, with `-rA` so every test's
/// status is reported as the pytest parser reads it).
pub const SWE_SMITH_TEST_CMD: &str = "pytest -rA --disable-warnings --color=no --tb=no";
/// SWE-Gym repositories without an official specification: pytest over the test patch's files.
pub const SWE_GYM_TEST_CMD: &str = "pytest -rA";
/// R2E-Gym's images carry their test runner at the repository root.
pub const R2E_GYM_TEST_CMD: &str = "bash run_tests.sh";
/// Where R2E-Gym keeps the hidden tests outside the repository (copied in to grade).
pub const R2E_GYM_TESTS_DIR: &str = "/r2e_tests";

/// The 11 repositories of SWE-Gym (SWE-bench schema, their own images): how `auto` tells its
/// records from SWE-bench's.
const SWE_GYM_REPOS: &[&str] = &[
    "getmoto/moto",
    "python/mypy",
    "pandas-dev/pandas",
    "iterative/dvc",
    "conan-io/conan",
    "dask/dask",
    "pydantic/pydantic",
    "bokeh/bokeh",
    "modin-project/modin",
    "facebookresearch/hydra",
    "Project-MONAI/MONAI",
];

/// Where a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// forge's own schema: `test_cmd` and `image` given (the bundled tasks, the Foundry).
    Forge,
    Swebench,
    SweGym,
    SweSmith,
    R2eGym,
    SweRebench,
}

impl Source {
    pub const ALL: [Source; 6] =
        [Source::Forge, Source::Swebench, Source::SweGym, Source::SweSmith, Source::R2eGym, Source::SweRebench];

    pub fn name(self) -> &'static str {
        match self {
            Source::Forge => "forge",
            Source::Swebench => "swebench",
            Source::SweGym => "swe-gym",
            Source::SweSmith => "swe-smith",
            Source::R2eGym => "r2e-gym",
            Source::SweRebench => "swe-rebench",
        }
    }

    /// The source a resolved task records (`None` for forge's own schema).
    pub fn of(inst: &TaskInstance) -> Source {
        inst.source.as_deref().and_then(|s| s.parse().ok()).unwrap_or(Source::Forge)
    }

    /// Whether eval scripts get network by default: the official harnesses run them with it
    /// (`pip install -e .` and tests that reach the network), so verdicts only match with it.
    /// forge's own tasks are built to run offline.
    pub fn eval_network_default(self) -> bool {
        self != Source::Forge
    }

    /// Container limits of this source's tasks. forge's own tasks are small and bounded tightly;
    /// the real repositories' test suites (compiled extensions, parallel builds) get room: a
    /// 1-CPU cap made a seaborn run 1.4× slower.
    pub fn default_limits(self) -> forge_sandbox::Limits {
        let defaults = forge_sandbox::Limits::default();
        match self {
            Source::Forge => defaults,
            _ => forge_sandbox::Limits {
                memory_bytes: 16 << 30,
                // Docker refuses a quota above the host's CPUs.
                nano_cpus: 4.min(host_cpus()) * 1_000_000_000,
                pids: 4096,
                storage_bytes: Some(16 << 30),
            },
        }
    }

    /// How to get a missing image of this source: the fix an "image missing" error names.
    pub fn image_fix(self, image: &str) -> String {
        match self {
            Source::Forge if image.starts_with("forge/") => {
                "build it with scripts/setup/build-base-image.sh".to_string()
            }
            Source::Forge => {
                "build it (`forge tasks validate` builds the bundled task images) or load it with `forge images load FILE.tar`".to_string()
            }
            _ => format!(
                "pull it (`forge images pull {image}`, or `--pull missing`; `docker login` if the registry rate-limits), or on a machine without a registry `docker save` it elsewhere and `forge images load FILE.tar`"
            ),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match n.as_str() {
            "forge" => Source::Forge,
            "swebench" | "swe-bench" | "swe-bench-verified" => Source::Swebench,
            "swe-gym" | "swegym" => Source::SweGym,
            "swe-smith" | "swesmith" => Source::SweSmith,
            "r2e-gym" | "r2egym" | "r2e" => Source::R2eGym,
            "swe-rebench" | "swerebench" => Source::SweRebench,
            _ => {
                return Err(format!(
                    "unknown task source {s:?}; one of auto, {}",
                    Source::ALL.map(Source::name).join(", ")
                ))
            }
        })
    }
}

/// CPUs of the Docker host (this machine: the engine is local).
pub fn host_cpus() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i64)
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn has(o: &Map<String, Value>, key: &str) -> bool {
    o.get(key).is_some_and(|v| !v.is_null())
}

/// The source of a record by its fields (what `--source auto` does). A record none of the
/// datasets' fields identify is read in forge's own schema as given (to run, it needs a
/// `test_cmd` or an `eval_script`: [`check_runnable`] says what to do otherwise).
pub fn detect(o: &Map<String, Value>) -> Result<Source, String> {
    if has(o, "install_config") {
        return Ok(Source::SweRebench);
    }
    if has(o, "docker_image") && !has(o, "FAIL_TO_PASS") {
        return Ok(Source::R2eGym);
    }
    let smith_repo = str_field(o, "repo").is_some_and(|r| r.starts_with("swesmith/"));
    if (has(o, "image_name") || smith_repo) && !has(o, "base_commit") {
        return Ok(Source::SweSmith);
    }
    if let Some(s) = str_field(o, "source") {
        return s.parse();
    }
    if has(o, "test_cmd") {
        return Ok(Source::Forge);
    }
    let repo = str_field(o, "repo").unwrap_or("");
    if SWE_GYM_REPOS.contains(&repo) {
        return Ok(Source::SweGym);
    }
    if has(o, "eval_script") || specs::known_repo(repo) {
        return Ok(Source::Swebench);
    }
    Ok(Source::Forge)
}

/// Whether a resolved task can run its tests; otherwise what to do about it.
pub fn check_runnable(inst: &TaskInstance) -> Result<(), String> {
    if inst.eval_script.is_some() || inst.test_cmd.is_some() {
        return Ok(());
    }
    Err(format!(
        "{} (repo {:?}) has neither `test_cmd` nor `eval_script`, and its fields do not tell which dataset it comes from \
         (no `install_config`, `image_name` or `docker_image`; not a SWE-bench or SWE-Gym repository): name it with --source {} \
         (`forge tasks resolve --source ... --out resolved.jsonl`, then use the resolved file; SWE-bench-style repositories \
         other than SWE-bench's need their specifications in {}), or give the record a `test_cmd`",
        inst.instance_id,
        inst.repo,
        Source::ALL[1..].iter().map(|s| s.name()).collect::<Vec<_>>().join("|"),
        specs::EXTRA_SPECS_VAR
    ))
}

/// Resolves one record (a JSON object) from `source` (`None`: [`detect`]ed).
pub fn resolve_record(record: Value, source: Option<Source>) -> Result<TaskInstance, String> {
    let Value::Object(mut o) = record else {
        return Err("expected a JSON object per record".into());
    };
    let source = match source {
        Some(s) => s,
        None => detect(&o)?,
    };
    let set = |o: &mut Map<String, Value>, key: &str, value: String| {
        if !has(o, key) {
            o.insert(key.into(), Value::String(value));
        }
    };
    match source {
        Source::Forge => {}
        Source::Swebench | Source::SweGym => {
            let id = str_field(&o, "instance_id").unwrap_or("").to_string();
            let image = match source {
                Source::Swebench => specs::official_image(&id),
                _ => specs::sweb_eval_image("xingyaoww", "_s_", &id),
            };
            set(&mut o, "image", image);
            set(&mut o, "shell_init", CONDA_TESTBED.into());
            set(&mut o, "start_ref", "HEAD".into());
        }
        Source::SweSmith => {
            // Bugs are branches (named by the instance id) of one image per repository; the
            // branch's last commit removes the failing tests, its parent has them. `patch` is the
            // diff that introduced the bug: the fix is its reverse.
            let id = str_field(&o, "instance_id").ok_or("SWE-smith record without `instance_id`")?.to_string();
            if !has(&o, "image") {
                let image = match str_field(&o, "image_name") {
                    Some(name) => name.to_string(),
                    None => swe_smith_image(str_field(&o, "repo").unwrap_or(""))?,
                };
                o.insert("image".into(), Value::String(image));
            }
            set(&mut o, "base_commit", id.clone());
            set(&mut o, "start_ref", id.clone());
            set(&mut o, "tests_ref", format!("{id}~1"));
            // (A record resolved before keeps both: resolving is idempotent.)
            if !has(&o, "bug_patch") {
                if let Some(bug) = str_field(&o, "patch").map(str::to_string) {
                    o.insert("bug_patch".into(), Value::String(bug.clone()));
                    o.insert("patch".into(), Value::String(reverse_patch(&bug)));
                }
            }
            set(&mut o, "test_cmd", SWE_SMITH_TEST_CMD.into());
            set(&mut o, "log_parser", "pytest".into());
            set(&mut o, "shell_init", CONDA_TESTBED.into());
        }
        Source::R2eGym => {
            let repo = str_field(&o, "repo_name").or(str_field(&o, "repo")).ok_or("R2E-Gym record without `repo_name`")?.to_string();
            let image = str_field(&o, "docker_image").ok_or("R2E-Gym record without `docker_image`")?.to_string();
            let commit = str_field(&o, "commit_hash").unwrap_or("").to_string();
            set(&mut o, "repo", repo.clone());
            set(&mut o, "image", image);
            let short: String = commit.chars().take(12).collect();
            set(&mut o, "instance_id", format!("{}__{short}", repo.replace('/', "__")));
            set(&mut o, "base_commit", "HEAD".into());
            set(&mut o, "start_ref", "HEAD".into());
            // Expected outputs, not test lists: every test expected to pass must pass.
            if !has(&o, "FAIL_TO_PASS") {
                let expected = match o.get("expected_output_json") {
                    Some(Value::String(s)) => serde_json::from_str::<Map<String, Value>>(s)
                        .map_err(|e| format!("`expected_output_json` is not a JSON object: {e}"))?,
                    Some(Value::Object(m)) => m.clone(),
                    _ => return Err("R2E-Gym record without `expected_output_json` (or FAIL_TO_PASS)".into()),
                };
                let passing: Vec<Value> = expected
                    .iter()
                    .filter(|(_, status)| status.as_str().is_some_and(|s| s.eq_ignore_ascii_case("PASSED")))
                    .map(|(test, _)| Value::String(test.clone()))
                    .collect();
                o.insert("FAIL_TO_PASS".into(), Value::Array(passing));
                o.insert("PASS_TO_PASS".into(), Value::Array(Vec::new()));
            }
            set(&mut o, "log_parser", "pytest".into());
            if !has(&o, "eval_script") && !has(&o, "test_cmd") {
                let init = str_field(&o, "shell_init").map(|s| format!("{s}\n")).unwrap_or_default();
                o.insert("eval_script".into(), Value::String(r2e_eval_script(&init)));
            }
        }
        Source::SweRebench => {
            let config = match o.get("install_config") {
                Some(Value::Object(m)) => m.clone(),
                Some(Value::String(s)) => serde_json::from_str::<Map<String, Value>>(s)
                    .map_err(|e| format!("`install_config` is not a JSON object: {e}"))?,
                _ => Map::new(),
            };
            let test_cmd = match config.get("test_cmd") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(parts)) => {
                    Some(parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" && "))
                }
                _ => None,
            };
            match test_cmd {
                Some(cmd) => set(&mut o, "test_cmd", cmd),
                None if has(&o, "test_cmd") || has(&o, "eval_script") => {}
                None => return Err("SWE-rebench record whose `install_config` has no `test_cmd`".into()),
            }
            if let Some(parser) = config.get("log_parser").and_then(Value::as_str) {
                set(&mut o, "log_parser", parser.to_string());
            }
            let id = str_field(&o, "instance_id").unwrap_or("").to_string();
            let image = str_field(&o, "image_name")
                .or(str_field(&o, "docker_image"))
                .map(str::to_string)
                .unwrap_or_else(|| specs::sweb_eval_image("swerebench", "_1776_", &id));
            set(&mut o, "image", image);
            set(&mut o, "shell_init", CONDA_TESTBED.into());
            set(&mut o, "start_ref", "HEAD".into());
        }
    }
    if source != Source::Forge {
        o.insert("source".into(), Value::String(source.name().into()));
    }
    let mut inst: TaskInstance =
        serde_json::from_value(Value::Object(o)).map_err(|e| format!("not a {source} record: {e}"))?;
    if matches!(source, Source::Swebench | Source::SweGym) {
        if inst.log_parser.is_none() {
            inst.log_parser = specs::official_log_parser(&inst.repo).map(str::to_string);
        }
        if inst.eval_script.is_none() && inst.test_cmd.is_none() {
            if source == Source::SweGym && !specs::known_version(&inst.repo, &inst.version) {
                inst.test_cmd = Some(SWE_GYM_TEST_CMD.into());
                inst.log_parser.get_or_insert_with(|| "pytest".into());
            } else {
                inst.eval_script = Some(specs::official_eval_script(&inst).map_err(|e| e.to_string())?);
            }
        }
    }
    Ok(inst)
}

/// The command the task's tests run with, without test files: what the agent is told.
pub fn test_command(inst: &TaskInstance) -> Option<String> {
    if let Some(cmd) = &inst.test_cmd {
        return Some(cmd.clone());
    }
    match Source::of(inst) {
        Source::Swebench | Source::SweGym => specs::official_test_cmd(&inst.repo, &inst.version),
        _ => None,
    }
}

/// SWE-smith's image of a repository record (`swesmith/<owner>__<repo>.<commit8>`).
fn swe_smith_image(repo: &str) -> Result<String, String> {
    let name = repo.strip_prefix("swesmith/").unwrap_or(repo);
    if name.is_empty() || !name.contains("__") {
        return Err(format!(
            "SWE-smith record without `image_name` whose repo {repo:?} is not of the form swesmith/<owner>__<repo>.<commit>"
        ));
    }
    Ok(format!("jyangballin/swesmith.x86_64.{}", name.replace("__", "_1776_").to_ascii_lowercase()))
}

/// R2E-Gym's grading: the hidden tests copied back into the repository, then its runner.
fn r2e_eval_script(shell_init: &str) -> String {
    let dir = R2E_GYM_TESTS_DIR;
    format!(
        "#!/bin/bash\nset -uo pipefail\ncd /testbed\n{shell_init}\
         if [ -d {dir} ]; then rm -rf r2e_tests && cp -r {dir} r2e_tests; fi\n\
         : '{start}'\necho '{start}'\n{R2E_GYM_TEST_CMD}\nrc=$?\necho '{end}'\nexit $rc\n",
        start = crate::grading::START_TEST_OUTPUT,
        end = crate::grading::END_TEST_OUTPUT,
    )
}

/// The reverse of a unified diff in git's format: applying it undoes the original.
pub fn reverse_patch(patch: &str) -> String {
    let mut out = String::with_capacity(patch.len());
    let mut lines = patch.split_inclusive('\n').peekable();
    // Lines left in the current hunk (old side, new side).
    let (mut old_left, mut new_left) = (0usize, 0usize);
    let (mut removed, mut added, mut last_removed) = (String::new(), String::new(), false);
    let flush = |out: &mut String, removed: &mut String, added: &mut String| {
        out.push_str(removed);
        out.push_str(added);
        removed.clear();
        added.clear();
    };
    while let Some(line) = lines.next() {
        let body = line.trim_end_matches(['\n', '\r']);
        let eol = &line[body.len()..];
        if old_left > 0 || new_left > 0 {
            // A run of changed lines comes out as its removals, then its additions; a "\ No
            // newline" marker stays with the line before it.
            match body.as_bytes().first() {
                Some(b'+') => {
                    new_left = new_left.saturating_sub(1);
                    removed.push('-');
                    removed.push_str(&line[1..]);
                    last_removed = true;
                }
                Some(b'-') => {
                    old_left = old_left.saturating_sub(1);
                    added.push('+');
                    added.push_str(&line[1..]);
                    last_removed = false;
                }
                Some(b'\\') if last_removed => removed.push_str(line),
                Some(b'\\') => added.push_str(line),
                _ => {
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                    flush(&mut out, &mut removed, &mut added);
                    out.push_str(line);
                }
            }
            if old_left == 0 && new_left == 0 {
                if let Some(next) = lines.next_if(|l| l.starts_with('\\')) {
                    match last_removed {
                        true => removed.push_str(next),
                        false => added.push_str(next),
                    }
                }
                flush(&mut out, &mut removed, &mut added);
            }
            continue;
        }
        if let Some(rest) = body.strip_prefix("diff --git ") {
            match rest.rfind(" b/") {
                Some(i) => {
                    let (a, b) = (&rest[2..i], &rest[i + 3..]);
                    out.push_str(&format!("diff --git a/{b} b/{a}{eol}"));
                }
                None => out.push_str(line),
            }
        } else if let Some(old) = body.strip_prefix("--- ") {
            // The file header pair swaps sides: "--- a/X" + "+++ b/Y" → "--- a/Y" + "+++ b/X".
            let new = lines.next_if(|l| l.starts_with("+++ ")).map(|l| l.trim_end_matches(['\n', '\r'])[4..].to_string());
            match new {
                Some(new) => {
                    let swap = |p: &str, prefix: &str| match p.strip_prefix("a/").or(p.strip_prefix("b/")) {
                        Some(path) => format!("{prefix}{path}"),
                        None => p.to_string(),
                    };
                    out.push_str(&format!("--- {}{eol}+++ {}{eol}", swap(&new, "a/"), swap(old, "b/")));
                }
                None => out.push_str(line),
            }
        } else if let Some(header) = body.strip_prefix("@@ ") {
            match parse_hunk_header(header) {
                Some((old, new, tail)) => {
                    old_left = old.1;
                    new_left = new.1;
                    let range = |(start, len, has_len): (usize, usize, bool)| match has_len {
                        true => format!("{start},{len}"),
                        false => start.to_string(),
                    };
                    out.push_str(&format!("@@ -{} +{} @@{tail}{eol}", range(new), range(old)));
                }
                None => out.push_str(line),
            }
        } else if let Some(rest) = body.strip_prefix("new file mode ") {
            out.push_str(&format!("deleted file mode {rest}{eol}"));
        } else if let Some(rest) = body.strip_prefix("deleted file mode ") {
            out.push_str(&format!("new file mode {rest}{eol}"));
        } else if let Some(rest) = body.strip_prefix("old mode ") {
            let next = lines.next_if(|l| l.starts_with("new mode "));
            match next {
                Some(n) => out.push_str(&format!("old mode {}{eol}new mode {rest}{eol}", &n.trim_end_matches(['\n', '\r'])[9..])),
                None => out.push_str(line),
            }
        } else if let Some(rest) = body.strip_prefix("rename from ") {
            let next = lines.next_if(|l| l.starts_with("rename to "));
            match next {
                Some(n) => out.push_str(&format!("rename from {}{eol}rename to {rest}{eol}", &n.trim_end_matches(['\n', '\r'])[10..])),
                None => out.push_str(line),
            }
        } else if let Some(rest) = body.strip_prefix("index ") {
            // "index A..B[ mode]"
            let (ids, mode) = rest.split_once(' ').map_or((rest, None), |(i, m)| (i, Some(m)));
            match ids.split_once("..") {
                Some((a, b)) => match mode {
                    Some(m) => out.push_str(&format!("index {b}..{a} {m}{eol}")),
                    None => out.push_str(&format!("index {b}..{a}{eol}")),
                },
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

/// `-a[,b] +c[,d] @@ tail` → ((a, b, has b), (c, d, has d), tail).
#[allow(clippy::type_complexity)]
fn parse_hunk_header(header: &str) -> Option<((usize, usize, bool), (usize, usize, bool), &str)> {
    let (ranges, tail) = header.split_once(" @@")?;
    let (old, new) = ranges.split_once(' ')?;
    let range = |r: &str| -> Option<(usize, usize, bool)> {
        match r.split_once(',') {
            Some((s, l)) => Some((s.parse().ok()?, l.parse().ok()?, true)),
            None => Some((r.parse().ok()?, 1, false)),
        }
    };
    Some((range(old.strip_prefix('-')?)?, range(new.strip_prefix('+')?)?, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sources_parse_by_their_names() {
        for s in Source::ALL {
            assert_eq!(s.name().parse::<Source>().unwrap(), s);
        }
        assert_eq!("SWE_smith".parse::<Source>().unwrap(), Source::SweSmith);
        let err = "swe-foo".parse::<Source>().unwrap_err();
        assert!(err.contains("swe-gym") && err.contains("auto"), "{err}");
    }

    #[test]
    fn detection_by_fields() {
        let d = |v: Value| detect(v.as_object().unwrap());
        assert_eq!(d(json!({"install_config": {"test_cmd": "pytest"}})).unwrap(), Source::SweRebench);
        assert_eq!(d(json!({"docker_image": "namanjain12/x_final:abc", "expected_output_json": "{}"})).unwrap(), Source::R2eGym);
        assert_eq!(d(json!({"image_name": "jyangballin/swesmith.x86_64.a_1776_b.1234abcd", "instance_id": "x"})).unwrap(), Source::SweSmith);
        assert_eq!(d(json!({"test_cmd": "pytest", "repo": "me/x"})).unwrap(), Source::Forge);
        assert_eq!(d(json!({"repo": "getmoto/moto"})).unwrap(), Source::SweGym);
        assert_eq!(d(json!({"repo": "django/django"})).unwrap(), Source::Swebench);
        assert_eq!(d(json!({"repo": "someone/else"})).unwrap(), Source::Forge);
        let unknown = resolve_record(json!({"repo": "someone/else", "instance_id": "x", "base_commit": "c", "FAIL_TO_PASS": [], "PASS_TO_PASS": []}), None).unwrap();
        let err = check_runnable(&unknown).unwrap_err();
        assert!(err.contains("--source") && err.contains("someone/else") && err.contains("FORGE_SWEBENCH_SPECS"), "{err}");
    }

    #[test]
    fn swe_smith_record_becomes_a_bug_branch_task() {
        let bug = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n def f():\n-    return 1\n+    return 2\n";
        let inst = resolve_record(
            json!({"instance_id": "o__r.1234abcd.func_pm__x", "repo": "swesmith/o__r.1234abcd", "patch": bug,
                   "FAIL_TO_PASS": ["t.py::test_f"], "PASS_TO_PASS": [], "problem_statement": "f returns 2"}),
            None,
        )
        .unwrap();
        assert_eq!(inst.source.as_deref(), Some("swe-smith"));
        assert_eq!(inst.image.as_deref(), Some("jyangballin/swesmith.x86_64.o_1776_r.1234abcd"));
        assert_eq!(inst.start_ref(), "o__r.1234abcd.func_pm__x");
        assert_eq!(inst.tests_ref.as_deref(), Some("o__r.1234abcd.func_pm__x~1"));
        assert!(inst.patch.contains("-    return 2\n+    return 1\n"), "{}", inst.patch);
        assert_eq!(inst.extra.get("bug_patch").and_then(Value::as_str), Some(bug));
        assert_eq!(inst.shell_init.as_deref(), Some(CONDA_TESTBED));
        // What `forge tasks resolve --out` writes resolves to itself.
        let again = resolve_record(serde_json::to_value(&inst).unwrap(), None).unwrap();
        assert_eq!(again, inst);
    }

    #[test]
    fn r2e_gym_expected_outputs_become_tests_that_must_pass() {
        let inst = resolve_record(
            json!({"repo_name": "aio/lib", "docker_image": "namanjain12/lib_final:abc", "commit_hash": "abcdef0123456789",
                   "problem_statement": "p", "expected_output_json": "{\"r2e_tests/t.py::test_a\": \"PASSED\", \"r2e_tests/t.py::test_b\": \"FAILED\"}"}),
            None,
        )
        .unwrap();
        assert_eq!(inst.instance_id, "aio__lib__abcdef012345");
        assert_eq!(inst.fail_to_pass, vec!["r2e_tests/t.py::test_a"]);
        assert!(inst.eval_script.as_deref().unwrap().contains("cp -r /r2e_tests r2e_tests"));
        assert_eq!(inst.start_ref(), "HEAD");
    }

    #[test]
    fn swe_rebench_install_config_gives_the_test_command_and_parser() {
        let inst = resolve_record(
            json!({"instance_id": "o__r-1", "repo": "o/r", "base_commit": "abc", "FAIL_TO_PASS": "[\"a\"]", "PASS_TO_PASS": "[]",
                   "image_name": "swerebench/sweb.eval.x86_64.o_1776_r-1",
                   "install_config": "{\"test_cmd\": [\"pytest -rA\"], \"log_parser\": \"parse_log_pytest\"}"}),
            None,
        )
        .unwrap();
        assert_eq!(inst.test_cmd.as_deref(), Some("pytest -rA"));
        assert_eq!(inst.log_parser.as_deref(), Some("parse_log_pytest"));
        assert_eq!(inst.image.as_deref(), Some("swerebench/sweb.eval.x86_64.o_1776_r-1"));
        assert_eq!(inst.source.as_deref(), Some("swe-rebench"));
        let err = resolve_record(json!({"instance_id": "x", "install_config": {}}), None).unwrap_err();
        assert!(err.contains("test_cmd"), "{err}");
    }

    #[test]
    fn reversed_patches_undo_their_original_with_git() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let o = std::process::Command::new("git").args(args).current_dir(dir.path()).output().unwrap();
            assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        git(&["init", "-q"]);
        std::fs::write(dir.path().join("a.py"), "x = 1\ny = 2\nz = 3\n").unwrap();
        std::fs::write(dir.path().join("gone.py"), "old\n").unwrap();
        std::fs::write(dir.path().join("tail.txt"), "no newline").unwrap();
        std::fs::write(dir.path().join("moved.py"), "keep me\nplease\nthanks\n").unwrap();
        git(&["add", "-A"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]);
        std::fs::write(dir.path().join("a.py"), "x = 1\n-- y = 20\nz = 3\nw = 4\n").unwrap();
        std::fs::remove_file(dir.path().join("gone.py")).unwrap();
        std::fs::write(dir.path().join("new.py"), "fresh\n").unwrap();
        std::fs::write(dir.path().join("tail.txt"), "still none!").unwrap();
        std::fs::rename(dir.path().join("moved.py"), dir.path().join("there.py")).unwrap();
        git(&["add", "-A"]);
        let forward = git(&["diff", "--cached", "-M"]);
        assert!(forward.contains("rename from") && forward.contains("new file mode") && forward.contains("\\ No newline"), "{forward}");
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "change"]);
        let reverse = reverse_patch(&forward);
        std::fs::write(dir.path().join("r.diff"), &reverse).unwrap();
        git(&["apply", "r.diff"]);
        std::fs::remove_file(dir.path().join("r.diff")).unwrap();
        git(&["add", "-A"]);
        assert_eq!(git(&["diff", "--cached", "HEAD~1", "--stat"]), "", "reverse:\n{reverse}");
        assert_eq!(reverse_patch(&reverse), forward);
    }
}
