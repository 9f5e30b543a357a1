//! The official SWE-bench specifications: per repository and version, the test command, install
//! step and extra eval commands; per repository, the language and log parser; the eval-script
//! conventions (test-output markers, heredoc tag, non-test extensions of the test patch).
//!
//! The data is `data/swebench-specs.json`, written by `scripts/fixtures/extract-swebench-specs.sh` from
//! swebench 4.1.0's `swebench.harness.constants` and log-parser tables (the last release that
//! carries them; 5.x moved them out). forge carries it because the hub's SWE-bench datasets have
//! no `eval_script`, `image` or `log_parser` columns: swebench derives them from these tables at
//! run time, and so does this module, giving the same script byte for byte (checked against all
//! 500 instances of SWE-bench Verified by `tests/specs.rs`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Result, SweError};
use crate::instance::TaskInstance;

/// The repository directory and conda environment of the official images.
const TESTBED: &str = "/testbed";
const CONDA_ENV: &str = "testbed";

#[derive(Deserialize)]
struct Specs {
    swebench_version: String,
    /// File endings of the test patch that are data, not tests to run (`get_test_directives`).
    non_test_exts: Vec<String>,
    start_test_output: String,
    end_test_output: String,
    /// Tag of the test patch's heredoc in Python eval scripts.
    eval_heredoc_delimiter: String,
    /// The same in the common (non-Python) eval scripts.
    eval_heredoc_delimiter_common: String,
    /// Repositories whose test commands swebench computes in code, not from the specs.
    custom_test_cmd_repos: Vec<String>,
    repos: BTreeMap<String, RepoSpecs>,
}

#[derive(Deserialize)]
struct RepoSpecs {
    /// Language: `py`, `js`, `go`, `rs`, `java`, `c`, `php`, `rb`.
    ext: String,
    /// The parser's name in swebench's table (what datasets put in `log_parser`).
    parser: Option<String>,
    versions: BTreeMap<String, VersionSpecs>,
}

/// The fields of one version's specification that the eval script uses (the JSON keeps the
/// rest: python, packages, pip_packages, pre_install, docker_specs, ...).
#[derive(Deserialize)]
struct VersionSpecs {
    test_cmd: Option<Commands>,
    /// Run before the informational git commands (Python scripts only).
    #[serde(default)]
    eval_commands: Vec<String>,
    /// Python: one command re-run before the tests; other languages: image-build steps only.
    install: Option<Commands>,
    /// Non-Python: rebuild steps after the test patch is applied.
    #[serde(default)]
    build: Vec<String>,
}

/// A command (Python specs) or a list of them (the other languages).
#[derive(Deserialize)]
#[serde(untagged)]
enum Commands {
    One(String),
    Many(Vec<String>),
}

impl Commands {
    /// The script lines: swebench appends a string and extends by a list.
    fn lines(&self) -> Vec<String> {
        match self {
            Commands::One(cmd) => vec![cmd.clone()],
            Commands::Many(cmds) => cmds.clone(),
        }
    }
}

static SPECS: LazyLock<Specs> = LazyLock::new(|| {
    let mut specs: Specs = serde_json::from_str(include_str!("../../../data/swebench-specs.json"))
        .expect(
        "data/swebench-specs.json is valid (regenerate it with scripts/fixtures/extract-swebench-specs.sh)",
    );
    if let Some(path) = std::env::var_os(EXTRA_SPECS_VAR) {
        // A bad file ends the process with its reason: running with half the specifications
        // would grade with scripts the user did not ask for.
        let extra = extra_specs(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
        for (repo, more) in extra {
            specs
                .repos
                .entry(repo)
                .or_insert(RepoSpecs {
                    ext: "py".into(),
                    parser: more.parser.clone(),
                    versions: BTreeMap::new(),
                })
                .versions
                .extend(more.versions);
        }
    }
    specs
});

/// The environment variable naming a JSON file of specifications for repositories the official
/// table lacks (SWE-bench-style datasets of one's own): `{"owner/repo": {"VERSION": {"test_cmd":
/// "...", "install": "...", "eval_commands": [...]}, "log_parser": "parse_log_pytest"}}`. Python
/// repositories; an entry of a repository the table knows adds versions to it.
pub const EXTRA_SPECS_VAR: &str = "FORGE_SWEBENCH_SPECS";

/// One repository of the extra specifications.
struct ExtraRepo {
    parser: Option<String>,
    versions: BTreeMap<String, VersionSpecs>,
}

fn extra_specs(path: &std::path::Path) -> std::result::Result<BTreeMap<String, ExtraRepo>, String> {
    let bad = |why: String| format!("{EXTRA_SPECS_VAR}={}: {why}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let Value::Object(repos) =
        serde_json::from_str::<Value>(&text).map_err(|e| bad(format!("not JSON: {e}")))?
    else {
        return Err(bad("expected an object keyed by repository".into()));
    };
    let mut out = BTreeMap::new();
    for (repo, entry) in repos {
        let Value::Object(mut entry) = entry else {
            return Err(bad(format!("{repo}: expected an object keyed by version")));
        };
        let parser = match entry.remove("log_parser") {
            Some(Value::String(p)) => Some(p),
            None => None,
            Some(other) => {
                return Err(bad(format!(
                    "{repo}: log_parser must be a string, got {other}"
                )))
            }
        };
        let mut versions = BTreeMap::new();
        for (version, spec) in entry {
            let spec: VersionSpecs =
                serde_json::from_value(spec).map_err(|e| bad(format!("{repo} {version}: {e}")))?;
            if spec.test_cmd.is_none() {
                return Err(bad(format!("{repo} {version}: no test_cmd")));
            }
            versions.insert(version, spec);
        }
        out.insert(repo, ExtraRepo { parser, versions });
    }
    Ok(out)
}

/// Whether the specifications know `version` of `repo`.
pub fn known_version(repo: &str, version: &str) -> bool {
    SPECS
        .repos
        .get(repo)
        .is_some_and(|r| r.versions.contains_key(version))
}

/// The test command of `repo` at `version` (the last of a list), without test files: what an
/// agent is told runs the tests.
pub fn official_test_cmd(repo: &str, version: &str) -> Option<String> {
    let cmd = SPECS
        .repos
        .get(repo)?
        .versions
        .get(version)?
        .test_cmd
        .as_ref()?;
    cmd.lines().last().cloned()
}

/// The swebench release the specifications come from.
pub fn swebench_version() -> &'static str {
    &SPECS.swebench_version
}

/// Whether the specifications know `repo` (`owner/name`, as SWE-bench spells it).
pub fn known_repo(repo: &str) -> bool {
    SPECS.repos.contains_key(repo)
}

/// The versions of `repo` the specifications know (empty for an unknown repository).
pub fn known_versions(repo: &str) -> Vec<&'static str> {
    SPECS
        .repos
        .get(repo)
        .map(|r| r.versions.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The log parser swebench uses for `repo`, named as its table and the datasets' `log_parser`
/// column name it (`parse_log_django`, `parse_log_astropy`, ...). Non-Python repositories get
/// their swebench name too, which `LogParser::from_name` does not implement.
pub fn official_log_parser(repo: &str) -> Option<&'static str> {
    SPECS.repos.get(repo)?.parser.as_deref()
}

/// The prebuilt image swebench publishes for an instance on Docker Hub:
/// `swebench/sweb.eval.x86_64.<id, "__" → "_1776_", lowercased>:latest`.
pub fn official_image(instance_id: &str) -> String {
    sweb_eval_image("swebench", "_1776_", instance_id)
}

/// `<namespace>/sweb.eval.x86_64.<id>:latest` with the id lowercased (Docker refuses capitals)
/// and its `__` replaced by `separator`, which differs between publishers: swebench uses
/// `_1776_`, SWE-Gym (`xingyaoww`) uses `_s_`. An empty namespace gives the local name without
/// the `namespace/` prefix.
pub fn sweb_eval_image(namespace: &str, separator: &str, instance_id: &str) -> String {
    let id = instance_id.to_lowercase().replace("__", separator);
    if namespace.is_empty() {
        format!("sweb.eval.x86_64.{id}:latest")
    } else {
        format!("{namespace}/sweb.eval.x86_64.{id}:latest")
    }
}

/// The eval script swebench 4.1.0 writes for `inst` (its `TestSpec.eval_script`): reset the test
/// files, apply the test patch, run the version's test command on the test directives between the
/// `>>>>> Start/End Test Output` markers, reset the test files again. Python repositories get
/// `make_eval_script_list_py`, JavaScript `make_eval_script_list_js`, the others
/// `make_eval_script_list_common`.
///
/// An unknown repository or version, or a repository whose test commands swebench computes in
/// code, is an `Invalid` error that says how to run the record anyway.
pub fn official_eval_script(inst: &TaskInstance) -> Result<String> {
    let (repo, specs) = lookup(inst)?;
    let test_cmd = specs.test_cmd.as_ref().ok_or_else(|| {
        unusable(
            inst,
            format!(
                "swebench {} gives no test command for {}",
                swebench_version(),
                inst.repo
            ),
        )
    })?;
    if SPECS.custom_test_cmd_repos.contains(&inst.repo) {
        return Err(unusable(
            inst,
            format!(
                "swebench {} computes the test commands of {} in code that forge does not carry",
                swebench_version(),
                inst.repo
            ),
        ));
    }
    let lines = match repo.ext.as_str() {
        "py" => python_eval_lines(inst, specs, test_cmd)?,
        ext => common_eval_lines(inst, specs, test_cmd, ext == "js")?,
    };
    let mut script = ["#!/bin/bash", "set -uxo pipefail"].join("\n");
    for line in lines {
        script.push('\n');
        script.push_str(&line);
    }
    script.push('\n');
    Ok(script)
}

/// The repository's and version's specifications, or an error naming what is missing.
fn lookup(inst: &TaskInstance) -> Result<(&'static RepoSpecs, &'static VersionSpecs)> {
    let Some(repo) = SPECS.repos.get(&inst.repo) else {
        return Err(unusable(
            inst,
            format!(
                "repository {:?} is not in the swebench {} specifications forge knows ({} repositories)",
                inst.repo,
                swebench_version(),
                SPECS.repos.len()
            ),
        ));
    };
    let Some(specs) = repo.versions.get(&inst.version) else {
        let known = known_versions(&inst.repo).join(", ");
        return Err(unusable(
            inst,
            format!(
                "{} has no version {:?} in the swebench {} specifications forge knows (known: {known})",
                inst.repo,
                inst.version,
                swebench_version()
            ),
        ));
    };
    Ok((repo, specs))
}

/// `why` the specifications cannot give `inst` an eval script, and the fix.
fn unusable(inst: &TaskInstance, why: String) -> SweError {
    SweError::Invalid(format!(
        "{}: no official eval script: {why}; give the record an `eval_script` (the complete script) \
         or a `test_cmd` (forge writes the script around it), or the repository's specifications in \
         a file named by {EXTRA_SPECS_VAR}",
        inst.instance_id
    ))
}

/// `make_eval_script_list_py`.
fn python_eval_lines(
    inst: &TaskInstance,
    specs: &VersionSpecs,
    test_cmd: &Commands,
) -> Result<Vec<String>> {
    let Commands::One(test_cmd) = test_cmd else {
        // swebench joins the command and the directives with spaces: a list would fail there too.
        return Err(unusable(
            inst,
            format!(
                "the {} {} test command is a list, not one command",
                inst.repo, inst.version
            ),
        ));
    };
    let base = &inst.base_commit;
    let reset = format!(
        "git checkout {base} {}",
        modified_files(&inst.test_patch).join(" ")
    );
    let mut test = test_cmd.clone();
    for d in test_directives(inst) {
        test.push(' ');
        test.push_str(&d);
    }
    let mut lines = vec![
        "source /opt/miniconda3/bin/activate".to_string(),
        format!("conda activate {CONDA_ENV}"),
        format!("cd {TESTBED}"),
    ];
    lines.extend(specs.eval_commands.iter().cloned());
    lines.extend([
        format!("git config --global --add safe.directory {TESTBED}"),
        format!("cd {TESTBED}"),
        "git status".to_string(),
        "git show".to_string(),
        format!("git -c core.fileMode=false diff {base}"),
        "source /opt/miniconda3/bin/activate".to_string(),
        format!("conda activate {CONDA_ENV}"),
    ]);
    lines.extend(specs.install.iter().flat_map(Commands::lines));
    lines.extend([
        reset.clone(),
        heredoc(
            "git apply -v -",
            &SPECS.eval_heredoc_delimiter,
            &inst.test_patch,
        ),
        format!(": '{}'", SPECS.start_test_output),
        test,
        format!(": '{}'", SPECS.end_test_output),
        reset,
    ]);
    Ok(lines)
}

/// `make_eval_script_list_common`, and `make_eval_script_list_js` (`js`): the latter downloads the
/// instance's `image_assets` of the test patch between the reset and the apply.
fn common_eval_lines(
    inst: &TaskInstance,
    specs: &VersionSpecs,
    test_cmd: &Commands,
    js: bool,
) -> Result<Vec<String>> {
    let files = modified_files(&inst.test_patch);
    let reset = if files.is_empty() {
        "echo \"No test files to reset\"".to_string()
    } else {
        format!("git checkout {} {}", inst.base_commit, files.join(" "))
    };
    let mut lines = vec![
        format!("cd {TESTBED}"),
        format!("git config --global --add safe.directory {TESTBED}"),
        format!("cd {TESTBED}"),
        reset.clone(),
    ];
    if js {
        lines.extend(image_asset_downloads(inst)?);
    }
    lines.push(heredoc(
        "git apply --verbose --reject -",
        &SPECS.eval_heredoc_delimiter_common,
        &inst.test_patch,
    ));
    lines.extend(specs.build.iter().cloned());
    lines.push(format!(": '{}'", SPECS.start_test_output));
    lines.extend(test_cmd.lines());
    lines.push(format!(": '{}'", SPECS.end_test_output));
    lines.push(reset);
    Ok(lines)
}

/// `cmd <<'TAG'`, the body, and the closing tag, as one script entry.
fn heredoc(cmd: &str, tag: &str, body: &str) -> String {
    format!("{cmd} <<'{tag}'\n{body}\n{tag}")
}

/// SWE-bench Multimodal's `image_assets.test_patch` (a JSON string or object): files the test
/// patch needs that a diff cannot carry, fetched with curl (`get_download_img_commands`).
fn image_asset_downloads(inst: &TaskInstance) -> Result<Vec<String>> {
    let assets = match inst.extra.get("image_assets") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| unusable(inst, format!("`image_assets` is not JSON: {e}")))?,
        Some(v) => v.clone(),
    };
    let mut out = Vec::new();
    for asset in assets
        .get("test_patch")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(path), Some(url)) = (
            asset.get("path").and_then(Value::as_str),
            asset.get("url").and_then(Value::as_str),
        ) else {
            return Err(unusable(
                inst,
                format!("an `image_assets` entry lacks a path or url: {asset}"),
            ));
        };
        let folder = match path.trim_end_matches('/').rsplit_once('/') {
            Some(("", _)) => "/",
            Some((dir, _)) => dir,
            None => ".",
        };
        out.extend([
            format!("mkdir -p {folder}"),
            format!("curl -o {path} {url}"),
            format!("chmod 777 {path}"),
        ]);
    }
    Ok(out)
}

/// The test patch's files as `get_test_directives` names them: the b side of every
/// `diff --git a/… b/…` (matched anywhere in a line, as swebench's unanchored regex does), less
/// data files; Django's as test modules (`tests/` and `.py` dropped, `/` → `.`), since its
/// runner takes module labels. sympy needs no special form: `bin/test` takes paths.
pub fn test_directives(inst: &TaskInstance) -> Vec<String> {
    if inst.repo == "swe-bench/humaneval" {
        return vec!["test.py".to_string()];
    }
    let directives = inst.test_patch.split('\n').filter_map(|line| {
        let rest = &line[line.find("diff --git a/")? + "diff --git a/".len()..];
        Some(&rest[rest.rfind(" b/")? + " b/".len()..])
    });
    let directives = directives.filter(|d| {
        !SPECS
            .non_test_exts
            .iter()
            .any(|ext| d.ends_with(ext.as_str()))
    });
    if inst.repo == "django/django" {
        directives
            .map(|d| {
                let d = d.strip_suffix(".py").unwrap_or(d);
                d.strip_prefix("tests/").unwrap_or(d).replace('/', ".")
            })
            .collect()
    } else {
        directives.map(str::to_string).collect()
    }
}

/// The files a patch changes that exist before it, as swebench's `get_modified_files` (unidiff)
/// lists them: the a side of each `diff --git` header that starts with `a/`, without the prefix;
/// files the patch creates (`new file mode` before the first hunk) are left out.
fn modified_files(patch: &str) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut in_header = false;
    for line in patch.split('\n') {
        if let Some(header) = line.strip_prefix("diff --git ") {
            files.extend(current.take());
            // unidiff's header regex: the a side greedily up to the last " b/".
            current = header.rfind(" b/").map(|i| header[..i].to_string());
            in_header = true;
        } else if in_header && line.starts_with("new file mode ") {
            current = None;
        } else if line.starts_with("@@ ") {
            in_header = false;
        }
    }
    files.extend(current);
    files
        .into_iter()
        .filter_map(|f| f.strip_prefix("a/").map(str::to_string))
        .collect()
}
