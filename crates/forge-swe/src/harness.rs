//! Execution: one instance in a fresh container from its image (patch applied with the official
//! fallbacks, hardened eval script, timeout), the official output layout, parallel bounded
//! workers, resumable runs, re-grading of existing logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_sandbox::{EngineSpec, Fleet, FleetMetrics, FleetOptions, ImageRecord, PullPolicy, Runtime, SandboxError, SandboxSpec};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SweError};
use crate::integrity;
use crate::resolve::Source;
use crate::grading::{
    self, GradingVersion, InstanceReport, APPLY_PATCH_FAIL, APPLY_PATCH_PASS, END_TEST_OUTPUT,
    RESET_FAILED, START_TEST_OUTPUT, TESTS_TIMEOUT, TEST_EXIT_CODE,
};
use crate::instance::{
    load_instances, load_predictions, select_instances, Prediction, PredictionsSource, TaskInstance,
};

/// Label on every container the harness creates (value: the run id).
pub const LABEL_RUN: &str = "forge.swe.run";

/// Wraps a pytest command so that the runner comes from outside the working tree and the
/// process exits right after pytest returns: `atexit` handlers and non-daemon threads of the
/// code under test cannot print after the summary. Other commands are returned unchanged.
pub fn harden_test_cmd(cmd: &str) -> String {
    // `-I`: pytest is imported with neither the working directory nor PYTHONPATH nor the user
    // site on sys.path, so no module in /testbed can stand in for it; the working directory is
    // put on the path only afterwards, as `python -m pytest` has it, for the code under test.
    // No plugins from entry points: a patch could add `x.dist-info/entry_points.txt`.
    let wrapper = "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -I -c 'import os, sys, pytest; \
                   sys.path.insert(0, os.getcwd()); \
                   rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); \
                   os._exit(int(rc))'";
    for prefix in ["python3 -m pytest", "python -m pytest", "pytest"] {
        if let Some(rest) = cmd.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with(' ') {
                return format!("{wrapper}{rest}");
            }
        }
    }
    cmd.to_string()
}

/// Bash that puts `/testbed` of a container from the instance's image at the start state for an
/// AGENT (rollouts, `forge eval swebench` with a model): projects share one image whose history
/// holds later tasks' fixes, so every other ref, the reflog and the now unreachable commits are
/// removed; `git log --all` then ends at the start and no later fix can be recovered. Git-ignored
/// files (build outputs the image installed) are kept. The last line printed is the start
/// commit, which the agent's diff is taken against whatever the agent commits.
pub fn agent_setup_script(inst: &TaskInstance) -> String {
    let mut s = String::from("set -e\ncd /testbed\n");
    if inst.start_ref() != "HEAD" {
        // A fresh container of an image at its start state needs no checkout, nor a clean that
        // could remove what the image's install left untracked.
        let start = shell_quote(inst.start_ref());
        s.push_str(&format!("{GIT} checkout -qf {start}\n{GIT} clean -fdq\n"));
    }
    if Source::of(inst) == Source::SweSmith {
        // A bug branch's ancestors hold the code before the bug was injected — the fix, one
        // `git diff` away. The agent starts from a root commit of the same tree instead.
        s.push_str(&format!(
            "{GIT} checkout -q --orphan forge-start\n\
             {GIT} -c user.name=forge -c user.email=forge@localhost commit -q --allow-empty --no-verify -m 'task start'\n"
        ));
    }
    if Source::of(inst) == Source::R2eGym {
        // R2E-Gym's hidden tests live outside the repository until grading.
        let dir = crate::resolve::R2E_GYM_TESTS_DIR;
        s.push_str(&format!("if [ -d r2e_tests ]; then rm -rf {dir} && mv r2e_tests {dir}; fi\n"));
    }
    // Detached first: the refs HEAD may point at (the image's branch, SWE-smith's bug branch)
    // are about to go.
    s.push_str(&format!(
        "{GIT} checkout -q --detach\n\
         {GIT} for-each-ref --format='%(refname)' | while read -r r; do {GIT} update-ref -d \"$r\"; done\n\
         {GIT} checkout -q -B main\n{GIT} reflog expire --expire=now --all\n{GIT} gc -q --prune=now\n\
         {GIT} rev-parse HEAD\n"
    ));
    s
}

/// git as the grader runs it: no hooks (a patch that slipped a hook past the checks would run it
/// on `git checkout`) and no file-system monitor command from the repository's configuration.
pub(crate) const GIT: &str = "git -c core.hooksPath=/dev/null -c core.fsmonitor=false";

pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The eval script of an instance. With `test_cmd` (our tasks) the harness writes its own
/// script; otherwise the dataset's `eval_script` is used as given. Like the official scripts it
/// restores the test files named by the test patch, applies the test patch and prints the test
/// output between the markers. `harden` (the default everywhere but in tests that prove the
/// hardening matters) wraps pytest so nothing can print after its summary. What a model patch
/// may not change is judged before the script runs ([`integrity`]; test files it changed are
/// restored by the harness for every eval script).
pub fn eval_script(inst: &TaskInstance, harden: bool) -> Result<String> {
    let Some(test_cmd) = inst.test_cmd.as_deref() else {
        crate::resolve::check_runnable(inst).map_err(SweError::Invalid)?;
        return Ok(inst.eval_script.clone().unwrap_or_default());
    };
    let base = &inst.base_commit;
    let test_files = inst.test_files();
    let files_q: Vec<String> = test_files.iter().map(|f| shell_quote(f)).collect();
    let files_q = files_q.join(" ");
    let mut s = String::new();
    s.push_str("#!/bin/bash\nset -uo pipefail\ncd /testbed\n");
    if let Some(init) = &inst.shell_init {
        // The task's environment (its python and pytest), before anything runs.
        s.push_str(&format!("{init}\n"));
    }
    s.push_str(&format!("{GIT} -c core.fileMode=false diff --stat {base}\n"));
    // Restore the test files to the base commit; files that do not exist at base are removed.
    s.push_str(&format!("restore() {{\n  for f in \"$@\"; do\n    if {GIT} cat-file -e "));
    s.push_str(&format!(
        "{base}:\"$f\" 2>/dev/null; then {GIT} checkout -q {base} -- \"$f\"; else rm -rf -- \"$f\"; fi\n  done\n}}\n"
    ));
    if !files_q.is_empty() {
        s.push_str(&format!("restore {files_q}\n"));
    }
    if let Some(tests_ref) = &inst.tests_ref {
        // The benchmark's tests the start state lacks (SWE-smith's bug branch removed them):
        // every file that differs between the base and `tests_ref`, from `tests_ref`.
        let r = shell_quote(tests_ref);
        s.push_str(&format!(
            "{GIT} diff --name-only -z {base} {r} | while IFS= read -r -d '' f; do\n  \
             if {GIT} cat-file -e {r}:\"$f\" 2>/dev/null; then {GIT} checkout -q {r} -- \"$f\"; else rm -f -- \"$f\"; fi\ndone\n"
        ));
    }
    // Byte-code caches the patch may have planted are not trusted either.
    s.push_str("find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null\n");
    if !inst.test_patch.trim().is_empty() {
        let delim = "EOF_114329324912";
        s.push_str(&format!(
            "{GIT} apply --verbose - <<'{delim}' || {{ echo '{}'; exit 1; }}\n{}\n{delim}\n",
            grading::TESTS_ERROR,
            inst.test_patch.trim_end_matches('\n')
        ));
    }
    s.push_str(&format!(
        ": '{START_TEST_OUTPUT}'\necho '{START_TEST_OUTPUT}'\n"
    ));
    let cmd = if harden {
        harden_test_cmd(test_cmd)
    } else {
        test_cmd.to_string()
    };
    s.push_str(&format!("{cmd} {files_q}\nrc=$?\n"));
    s.push_str(&format!("echo '{END_TEST_OUTPUT}'\n"));
    if !files_q.is_empty() {
        s.push_str(&format!("restore {files_q}\n"));
    }
    s.push_str("exit $rc\n");
    Ok(s)
}

/// How an instance's evaluation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Graded (resolved or not).
    Graded { report: InstanceReport },
    /// No patch (None or empty): not run, unresolved.
    EmptyPatch,
    /// Infrastructure or patch-application failure: recorded with its reason, never "unresolved".
    Error { reason: String },
}

const PATCH_NOT_APPLIED: &str = "patch could not be applied (git apply, git apply --reject, patch --fuzz=5 all failed)";
const TESTS_TIMED_OUT: &str = "tests timed out after";
/// The container was created and started and then stopped while the patched code ran: its
/// main process was killed or ran out of memory — the code's doing, not the machinery's.
const CONTAINER_DIED: &str = "the container stopped while the patched code ran";
/// Outcomes the patch caused: scored 0, never excluded as infrastructure.
const POLICY_CAUSES: &[&str] = &[PATCH_NOT_APPLIED, TESTS_TIMED_OUT, CONTAINER_DIED];

impl Outcome {
    /// The reason, when the machinery failed (image, container, checkout) rather than the patch:
    /// a patch that does not apply or makes the tests hang is the patch's doing. RL rewards
    /// exclude the former and score the latter 0.
    pub fn infrastructure_failure(&self) -> Option<&str> {
        match self {
            Outcome::Error { reason } if !POLICY_CAUSES.iter().any(|c| reason.starts_with(c)) => Some(reason),
            _ => None,
        }
    }
}

/// The result of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceResult {
    pub instance_id: String,
    pub outcome: Outcome,
    /// Seconds from container creation to removal (0 when not run).
    pub seconds: f64,
    /// True when an earlier run's report was reused (resume).
    pub reused: bool,
    /// The image the instance ran in: its registry digest (`repo@sha256:...`, none for images
    /// built locally) and local id, so a report says which content a tag meant at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The Docker engine it ran on (its endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Runs lost to an engine that stopped answering before this one finished elsewhere.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub engine_failures: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl InstanceResult {
    pub fn resolved(&self) -> bool {
        matches!(&self.outcome, Outcome::Graded { report } if report.resolved)
    }
}

/// Container resources a user sets over the per-source defaults
/// ([`Source::default_limits`]); `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerOverrides {
    pub memory_bytes: Option<i64>,
    /// CPUs (fractions allowed).
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    /// Network for eval scripts (the official harnesses give it; default per source,
    /// [`Source::eval_network_default`]). Agents never get network from this.
    pub eval_network: Option<bool>,
}

impl ContainerOverrides {
    /// The limits of a container of `inst`: its source's defaults with these overrides.
    pub fn limits_for(&self, inst: &TaskInstance) -> forge_sandbox::Limits {
        let mut limits = Source::of(inst).default_limits();
        if let Some(m) = self.memory_bytes {
            limits.memory_bytes = m;
        }
        if let Some(c) = self.cpus {
            // Docker refuses a quota above the host's CPUs: more means all of them.
            limits.nano_cpus = ((c * 1e9).round() as i64).min(crate::resolve::host_cpus() * 1_000_000_000);
        }
        if let Some(p) = self.pids {
            limits.pids = p;
        }
        limits
    }

    /// Whether `inst`'s eval container gets network.
    pub fn eval_network_for(&self, inst: &TaskInstance) -> bool {
        self.eval_network.unwrap_or_else(|| Source::of(inst).eval_network_default())
    }
}

/// Options of one instance's execution.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub timeout: Duration,
    pub version: GradingVersion,
    /// Extra labels on the container (tests use them to check for leaks).
    pub labels: BTreeMap<String, String>,
    /// Image used when the instance names none.
    pub default_image: Option<String>,
    /// Reward-hacking hardening (see [`eval_script`]); on by default.
    pub harden: bool,
    /// Resources and network of eval containers over the per-source defaults.
    pub container: ContainerOverrides,
    /// When the instance's image is pulled from its registry.
    pub pull: PullPolicy,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            timeout: Duration::from_secs(1800),
            version: GradingVersion::V4,
            labels: BTreeMap::new(),
            default_image: None,
            harden: true,
            container: ContainerOverrides::default(),
            pull: PullPolicy::Missing,
        }
    }
}

/// What running one instance produced (before files are written).
#[derive(Debug, Clone)]
pub struct RawRun {
    pub eval_script: String,
    /// The full log (apply output, eval output, the host-written exit code line).
    pub log: String,
    pub outcome: Outcome,
    /// Seconds per phase: pull, create, checkout, apply, tests, remove (those that ran).
    pub timings: Vec<(&'static str, f64)>,
    /// The image it ran in (`None` when it never got that far).
    pub image: Option<ImageRecord>,
}

/// Runs one instance with `patch` (`None` or empty: only the test patch) in a fresh container and
/// grades it.
pub async fn run_instance(
    rt: &Runtime,
    inst: &TaskInstance,
    patch: Option<&str>,
    opts: &ExecOptions,
) -> Result<RawRun> {
    let script = eval_script(inst, opts.harden)?;
    let image = instance_image(inst, opts)?;
    let err = |reason: String, log: String, script: &str| RawRun {
        eval_script: script.to_string(),
        log,
        outcome: Outcome::Error { reason },
        timings: Vec::new(),
        image: None,
    };
    if let Some(refusal) = patch.filter(|_| opts.harden).and_then(integrity::refusal_for_patch) {
        let reason = refusal.to_string();
        return Ok(RawRun {
            eval_script: script,
            log: format!("{reason}\n"),
            outcome: Outcome::Graded { report: InstanceReport::refused(reason, false) },
            timings: Vec::new(),
            image: None,
        });
    }
    let t = Instant::now();
    let record = match rt.ensure_image(&image, opts.pull, |_| {}).await {
        Ok(record) => record,
        Err(e) => {
            let fix = Source::of(inst).image_fix(&image);
            return Ok(err(format!("image missing: {image} ({e}); {fix}"), String::new(), &script));
        }
    };
    let pull_seconds = t.elapsed().as_secs_f64();
    let mut spec = SandboxSpec::new(image).workdir("/testbed").limits(opts.container.limits_for(inst));
    spec.network = opts.container.eval_network_for(inst);
    spec.max_output_bytes = 64 << 20;
    spec.default_timeout = opts.timeout;
    for (k, v) in &opts.labels {
        spec = spec.label(k, v);
    }
    let t = Instant::now();
    let mut sb = match rt.create(&spec).await {
        Ok(sb) => sb,
        Err(e) => {
            return Ok(err(
                format!("container creation failed: {e}"),
                String::new(),
                &script,
            ))
        }
    };
    let mut timings = vec![("pull", pull_seconds), ("create", t.elapsed().as_secs_f64())];
    let res = run_in(&sb, inst, patch, &script, opts, &mut timings).await;
    let t = Instant::now();
    let _ = sb.remove().await;
    timings.push(("remove", t.elapsed().as_secs_f64()));
    let mut r = match res {
        Ok(r) => r,
        Err(e) => err(format!("container failure: {e}"), String::new(), &script),
    };
    r.timings = timings;
    r.image = Some(record);
    Ok(r)
}

/// The image `inst` runs in: its own, else the run's default.
pub fn instance_image(inst: &TaskInstance, opts: &ExecOptions) -> Result<String> {
    inst.image
        .clone()
        .or_else(|| opts.default_image.clone())
        .ok_or_else(|| SweError::Invalid(format!("instance {} names no image; give the dataset an `image` column or --default-image", inst.instance_id)))
}

/// [`run_instance`] on a fleet: placed on an engine with room that has the image, and run again
/// on another engine when the one it ran on stops answering (the run's failure was the
/// engine's, not the patch's). Returns the run, the engine it ran on, and how many runs were
/// lost to engines that went down. `Err` only when no engine is left to run it on.
pub async fn run_instance_on_fleet(
    fleet: &Fleet,
    inst: &TaskInstance,
    patch: Option<&str>,
    opts: &ExecOptions,
) -> std::result::Result<(RawRun, Option<String>, usize), SandboxError> {
    let image = match instance_image(inst, opts) {
        Ok(image) => image,
        Err(e) => return Ok((error_run(e.to_string()), None, 0)),
    };
    let mut lost = 0;
    loop {
        let placement = match fleet.place(&image, &opts.container.limits_for(inst), opts.pull).await {
            Ok(p) => p,
            Err(e @ (SandboxError::NoEngineUp { .. } | SandboxError::NoEngineFits { .. })) => return Err(e),
            Err(e) => {
                let fix = Source::of(inst).image_fix(&image);
                return Ok((error_run(format!("image missing: {image} ({e}); {fix}")), None, lost));
            }
        };
        let run = match run_instance(placement.runtime(), inst, patch, opts).await {
            Ok(run) => run,
            Err(e) => error_run(e.to_string()),
        };
        let engine = placement.endpoint().to_string();
        // a run that errored on an engine that no longer answers says nothing about the patch
        if matches!(run.outcome, Outcome::Error { .. }) && lost < fleet.len() && fleet.confirm_down(placement.runtime()).await {
            lost += 1;
            tracing::warn!(instance = %inst.instance_id, engine, "the engine stopped answering during the run; running the instance again on another engine");
            continue;
        }
        return Ok((run, Some(engine), lost));
    }
}

fn error_run(reason: String) -> RawRun {
    RawRun { eval_script: String::new(), log: String::new(), outcome: Outcome::Error { reason }, timings: Vec::new(), image: None }
}

async fn run_in(
    sb: &forge_sandbox::Sandbox,
    inst: &TaskInstance,
    patch: Option<&str>,
    script: &str,
    opts: &ExecOptions,
    timings: &mut Vec<(&'static str, f64)>,
) -> Result<RawRun> {
    let mut log = String::new();
    let short = Some(Duration::from_secs(120));
    let done = |log: String, outcome: Outcome| RawRun {
        eval_script: script.to_string(),
        log,
        outcome,
        timings: Vec::new(),
        image: None,
    };
    let mut t = Instant::now();
    let mut lap = |name: &'static str, timings: &mut Vec<(&'static str, f64)>| {
        timings.push((name, t.elapsed().as_secs_f64()));
        t = Instant::now();
    };
    // A clean checkout of the start state when the image is not already at it (images shared by
    // several tasks, SWE-smith's bug branches). Git-ignored files stay: images hold build
    // outputs (compiled extensions, setuptools_scm's `_version.py`) the tests need.
    let start = inst.start_ref();
    if start != "HEAD" {
        let base = shell_quote(start);
        let o = sb
            .exec(
                &[
                    "bash",
                    "-c",
                    &format!("cd /testbed && {GIT} checkout -qf {base} && {GIT} clean -fdq"),
                ],
                short,
            )
            .await?;
        if o.exit_code != Some(0) {
            log.push_str(&o.output);
            log.push_str(&format!("\n{RESET_FAILED}\n"));
            return Ok(done(
                log,
                Outcome::Error {
                    reason: format!(
                        "could not check out base commit {base}: {}",
                        o.output.trim()
                    ),
                },
            ));
        }
        lap("checkout", timings);
    }
    if let Some(p) = patch.filter(|p| !p.trim().is_empty()) {
        let mut data = p.as_bytes().to_vec();
        if !data.ends_with(b"\n") {
            data.push(b'\n');
        }
        sb.write_file("/tmp/patch.diff", &data, 0o644).await?;
        // Hardened, the same exec lists what the apply changed (for the post-apply check) after a
        // reference timestamp that everything the apply writes is newer than (the pause outlasts
        // the file system's timestamp granularity).
        let (reference, listing) = match opts.harden {
            true => (
                format!("touch {APPLY_STARTED} && sleep 0.02 && "),
                format!(" && {{ ( {} ) || exit {LISTING_FAILED}; }}", change_listing_script(inst)),
            ),
            false => (String::new(), String::new()),
        };
        let apply = format!(
            "{reference}cd /testbed && \
            ({GIT} apply --verbose /tmp/patch.diff || {GIT} apply --verbose --reject /tmp/patch.diff \
             || patch --batch --fuzz=5 -p1 -i /tmp/patch.diff){listing}"
        );
        let o = sb.exec(&["bash", "-c", &apply], short).await?;
        log.push_str(&o.output);
        if o.exit_code == Some(LISTING_FAILED) {
            return Err(SweError::Invalid(format!("listing the files the patch changed failed: {}", o.output.trim())));
        }
        if o.exit_code != Some(0) {
            log.push_str(&format!("\n{APPLY_PATCH_FAIL}\n"));
            return Ok(done(
                log,
                Outcome::Error {
                    reason: PATCH_NOT_APPLIED.into(),
                },
            ));
        }
        log.push_str(&format!("\n{APPLY_PATCH_PASS}\n"));
        lap("apply", timings);
        if opts.harden {
            let changes = applied_changes(sb).await?;
            if let Some(refusal) = judge_applied_changes(sb, inst, &changes).await? {
                let reason = refusal.to_string();
                log.push_str(&format!("{reason}\n"));
                return Ok(done(log, Outcome::Graded { report: InstanceReport::refused(reason, true) }));
            }
            restore_test_files(sb, inst, &changes).await?;
            lap("check", timings);
        }
    }
    sb.write_file("/eval.sh", script.as_bytes(), 0o755).await?;
    let o = sb.exec(&["bash", "/eval.sh"], Some(opts.timeout)).await?;
    lap("tests", timings);
    log.push_str(&o.output);
    if o.timed_out {
        log.push_str(&format!("\n{TESTS_TIMEOUT}\n"));
        return Ok(done(
            log,
            Outcome::Error {
                reason: format!("{TESTS_TIMED_OUT} {} s", opts.timeout.as_secs()),
            },
        ));
    }
    // An exec that ended without an exit code, or a script that never reached its end marker,
    // may mean the container is going down: give the engine a moment to tell.
    let suspicious = o.exit_code.is_none() || !o.output.contains(END_TEST_OUTPUT);
    for attempt in 0..if suspicious { 10 } else { 1 } {
        match sb.container_state().await {
            Ok(Some(state)) if state == "running" => {}
            Ok(Some(state)) => {
                return Ok(done(
                    log,
                    Outcome::Error {
                        reason: format!("{CONTAINER_DIED} ({state})"),
                    },
                ));
            }
            Ok(None) => {
                return Ok(done(
                    log,
                    Outcome::Error {
                        reason: "container vanished during the tests".into(),
                    },
                ));
            }
            Err(e) => {
                return Ok(done(
                    log,
                    Outcome::Error {
                        reason: format!("container state unknown: {e}"),
                    },
                ))
            }
        }
        if attempt + 1 < 10 && suspicious {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if o.exit_code.is_none() {
        return Ok(done(
            log,
            Outcome::Error {
                reason: "the eval script ended without an exit code".into(),
            },
        ));
    }
    // Host-written: the code under test cannot put anything after this line.
    if !log.ends_with('\n') {
        log.push('\n');
    }
    log.push_str(&format!("{TEST_EXIT_CODE} {}\n", o.exit_code.unwrap_or(-1)));
    let report = grading::grade(inst, Some(patch.unwrap_or("")), &log, opts.version);
    Ok(done(log, Outcome::Graded { report }))
}

/// Reference file touched right before the model patch is applied.
const APPLY_STARTED: &str = "/tmp/.forge-apply-started";

/// Exit code of the apply exec when the listing after a successful apply failed.
const LISTING_FAILED: i64 = 97;
/// Where [`change_listing_script`] writes its NUL-separated `W|D kind existed path` entries.
const CHANGE_LIST: &str = "/tmp/.forge-changes";

/// Bash that lists what the apply step actually changed in `/testbed` into [`CHANGE_LIST`]:
/// files newer than [`APPLY_STARTED`] (`.git/` included) and tracked files now missing. git runs
/// only once `.git/` is known untouched (a planted configuration could run commands).
fn change_listing_script(inst: &TaskInstance) -> String {
    let base = &inst.base_commit;
    let list = CHANGE_LIST;
    format!(
        "cd /testbed && find . -newer {APPLY_STARTED} ! -type d -printf '%y %P\\0' > /tmp/.forge-written || exit 1\n\
         : > {list}\n\
         if tr '\\0' '\\n' < /tmp/.forge-written | grep -qE '^. \\.git(/|$)'; then\n\
           tr '\\0' '\\n' < /tmp/.forge-written | grep -E '^. \\.git(/|$)' | head -1 | sed 's/^. /W f 0 /' | tr '\\n' '\\0' > {list}; exit 0\n\
         fi\n\
         while IFS= read -r -d '' entry; do\n\
           kind=\"${{entry%% *}}\"; path=\"${{entry#? }}\"\n\
           if {GIT} cat-file -e \"{base}:$path\" 2>/dev/null; then existed=1; else existed=0; fi\n\
           printf 'W %s %s %s\\0' \"$kind\" \"$existed\" \"$path\" >> {list}\n\
         done < /tmp/.forge-written\n\
         {GIT} ls-files -d -z | while IFS= read -r -d '' path; do printf 'D f 1 %s\\0' \"$path\" >> {list}; done\n"
    )
}

/// The changes [`change_listing_script`] recorded.
async fn applied_changes(sb: &forge_sandbox::Sandbox) -> Result<Vec<integrity::ChangedFile>> {
    let (bytes, _) = sb.read_file(CHANGE_LIST, 64 << 20).await?;
    let mut changes = Vec::new();
    for entry in bytes.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let mut parts = entry.splitn(4, ' ');
        let (what, kind, existed, path) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""));
        let change = match what {
            Some("D") => integrity::Change::Deleted,
            _ => integrity::Change::Written { symlink: kind == Some("l"), existed_at_base: existed == Some("1") },
        };
        changes.push(integrity::ChangedFile { path: path.to_string(), change });
    }
    Ok(changes)
}

/// Test files the patch changed go back to the base commit (new ones are removed) before any
/// eval script runs, for datasets' own eval scripts too (which restore only the test patch's
/// files): the tests that count are the benchmark's, never the model's edit of them or of their
/// helpers. No gold patch of SWE-bench Verified changes a test file.
async fn restore_test_files(sb: &forge_sandbox::Sandbox, inst: &TaskInstance, changes: &[integrity::ChangedFile]) -> Result<()> {
    let base = &inst.base_commit;
    let mut script = String::from("cd /testbed\n");
    for c in changes.iter().filter(|c| integrity::is_test_file(&c.path)) {
        let q = shell_quote(&c.path);
        match c.change {
            integrity::Change::Written { existed_at_base: false, .. } => script.push_str(&format!("rm -f -- {q}\n")),
            _ => script.push_str(&format!("{GIT} checkout -q {base} -- {q}\n")),
        }
    }
    if script.lines().count() > 1 {
        let o = sb.exec(&["bash", "-c", &script], Some(Duration::from_secs(120))).await?;
        if o.exit_code != Some(0) {
            return Err(SweError::Invalid(format!("restoring the test files the patch changed failed: {}", o.output.trim())));
        }
    }
    Ok(())
}

/// Rule 2 of [`integrity`]: the changes judged by [`integrity::refusal_for_changes`], with the
/// facts it needs read from the container.
async fn judge_applied_changes(
    sb: &forge_sandbox::Sandbox,
    inst: &TaskInstance,
    changes: &[integrity::ChangedFile],
) -> Result<Option<integrity::Refusal>> {
    let base = &inst.base_commit;
    // What the judgement needs beyond the list: packages around new shadowing modules, and the
    // two versions of changed shared configuration files.
    let mut packages = std::collections::BTreeSet::new();
    let mut configs = BTreeMap::new();
    for c in changes {
        if let Some(dir) = integrity::shadows_module(&c.path, |_| false).and(c.path.rsplit_once('/').map(|(d, _)| d)) {
            let probe = format!("cd /testbed && test -e {}", shell_quote(&format!("{dir}/__init__.py")));
            if sb.exec(&["bash", "-c", &probe], Some(Duration::from_secs(60))).await?.exit_code == Some(0) {
                packages.insert(dir.to_string());
            }
        }
        let name = c.path.rsplit('/').next().unwrap_or(&c.path);
        if integrity::SHARED_CONFIG.contains(&name) {
            let q = shell_quote(&format!("{base}:{}", c.path));
            let old = sb.exec(&["bash", "-c", &format!("cd /testbed && {GIT} show {q}")], Some(Duration::from_secs(60))).await?;
            let old = (old.exit_code == Some(0)).then_some(old.output);
            let new = match c.change {
                integrity::Change::Deleted => None,
                _ => Some(String::from_utf8_lossy(&sb.read_file(&format!("/testbed/{}", c.path), 16 << 20).await?.0).into_owned()),
            };
            configs.insert(c.path.clone(), (old, new));
        }
    }
    Ok(integrity::refusal_for_changes(
        changes,
        |dir| packages.contains(dir),
        |path| configs.get(path).cloned().unwrap_or((None, None)),
    ))
}

/// Builds the images of a bundled task set when an instance names one (`forge-swe/...`) that is
/// missing, from the task sources `dataset` belongs to ([`crate::bundled::tasks_dir_for`]).
/// Failures are logged; the affected instances then end as "image missing" errors.
pub async fn ensure_bundled_images(rt: &Runtime, dataset: &Path, instances: &[TaskInstance]) {
    let mut missing = false;
    for img in instances.iter().filter_map(|i| i.image.as_deref()) {
        if img.starts_with("forge-swe/") && rt.image_info(img).await.is_err() {
            missing = true;
            break;
        }
    }
    if missing {
        let dir = crate::bundled::tasks_dir_for(dataset);
        tracing::info!(tasks = %dir.display(), "building the bundled task images");
        if let Err(e) = crate::bundled::prepare(rt, &dir).await {
            tracing::warn!("could not build the bundled task images: {e}");
        }
    }
}

/// Called once per finished instance (for progress bars): (result, done, total to run).
pub type ProgressFn = std::sync::Arc<dyn Fn(&InstanceResult, usize, usize) + Send + Sync>;

/// Options of a whole evaluation run (`forge eval swebench`).
#[derive(Clone)]
pub struct EvalOptions {
    /// Dataset: parquet, JSONL or JSON.
    pub dataset: PathBuf,
    /// Predictions file or gold.
    pub predictions: PredictionsSource,
    pub run_id: String,
    /// Only these instances (all when empty).
    pub instance_ids: Vec<String>,
    /// Parallel containers.
    pub workers: usize,
    /// Per-instance test timeout.
    pub timeout: Duration,
    pub grading: GradingVersion,
    /// Root under which `logs/run_evaluation/...` and the summary `{model}.{run_id}.json` go.
    pub output_root: PathBuf,
    /// Image for instances that name none.
    pub default_image: Option<String>,
    /// Extra container labels.
    pub labels: BTreeMap<String, String>,
    /// Progress callback (instances that run; resumed and empty ones are not reported).
    pub progress: Option<ProgressFn>,
    /// Resources and network of eval containers over the per-source defaults.
    pub container: ContainerOverrides,
    /// When instance images are pulled from their registries.
    pub pull: PullPolicy,
    /// The Docker engines to run containers on (empty: `$DOCKER_HOST` or the local socket).
    pub engines: Vec<EngineSpec>,
}

impl std::fmt::Debug for EvalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalOptions")
            .field("dataset", &self.dataset)
            .field("predictions", &self.predictions)
            .field("run_id", &self.run_id)
            .field("instance_ids", &self.instance_ids)
            .field("workers", &self.workers)
            .field("timeout", &self.timeout)
            .field("grading", &self.grading)
            .field("output_root", &self.output_root)
            .field("default_image", &self.default_image)
            .field("labels", &self.labels)
            .field("container", &self.container)
            .field("pull", &self.pull)
            .field("engines", &self.engines)
            .finish_non_exhaustive()
    }
}

impl EvalOptions {
    pub fn new(dataset: impl Into<PathBuf>, predictions: PredictionsSource, run_id: &str) -> Self {
        EvalOptions {
            dataset: dataset.into(),
            predictions,
            run_id: run_id.to_string(),
            instance_ids: Vec::new(),
            workers: 4,
            timeout: Duration::from_secs(1800),
            grading: GradingVersion::V4,
            output_root: PathBuf::from("."),
            default_image: None,
            labels: BTreeMap::new(),
            progress: None,
            container: ContainerOverrides::default(),
            pull: PullPolicy::Missing,
            engines: Vec::new(),
        }
    }
}

/// The run summary `{model}.{run_id}.json` (official field names plus `errors` with reasons).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub total_instances: usize,
    pub submitted_instances: usize,
    pub completed_instances: usize,
    pub resolved_instances: usize,
    pub unresolved_instances: usize,
    pub empty_patch_instances: usize,
    pub error_instances: usize,
    pub completed_ids: Vec<String>,
    pub incomplete_ids: Vec<String>,
    pub empty_patch_ids: Vec<String>,
    pub submitted_ids: Vec<String>,
    pub resolved_ids: Vec<String>,
    pub unresolved_ids: Vec<String>,
    pub error_ids: Vec<String>,
    pub schema_version: u32,
    /// instance id → reason.
    pub errors: BTreeMap<String, String>,
    /// Instances whose patch was refused by the reward-integrity checks ([`integrity`]), with
    /// the reason (they count as completed and unresolved).
    #[serde(default)]
    pub refused: BTreeMap<String, String>,
    /// How many of the refusals were suspected in-process tampering.
    #[serde(default)]
    pub suspected_reward_hacks: usize,
    /// instance id → the image it ran in now: its registry digest, or its local id for images
    /// that never came from a registry (instances reused from an earlier run are not listed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    pub grading: GradingVersion,
    pub wall_seconds: f64,
    /// The Docker engines: containers, image transfers and failures per engine, placement waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetMetrics>,
    /// Instances run again on another engine because the one they ran on stopped answering.
    #[serde(default)]
    pub engine_reruns: usize,
    /// instance id → the engine it ran on now (with more than one engine).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engines: BTreeMap<String, String>,
    /// Where the summary was written.
    #[serde(skip)]
    pub summary_path: PathBuf,
}

/// `model_name_or_path` as a path component (official: `/` → `__`).
pub fn model_dir_name(model: &str) -> String {
    let m = model.replace('/', "__");
    if m.is_empty() {
        "None".into()
    } else {
        m
    }
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| SweError::io(d, e))?;
    }
    // Atomic: a crash never leaves a half-written report that resume would trust.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| SweError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SweError::io(path, e))
}

/// Writes the per-instance files; `report.json` only for graded instances. `ran_on`: the engine
/// and how many earlier runs engines that went down lost.
fn write_instance_files(dir: &Path, pred: &Prediction, raw: &RawRun, ran_on: Option<(&str, usize)>) -> Result<()> {
    write(
        &dir.join("patch.diff"),
        pred.model_patch.as_deref().unwrap_or("").as_bytes(),
    )?;
    write(&dir.join("eval.sh"), raw.eval_script.as_bytes())?;
    write(&dir.join("test_output.txt"), raw.log.as_bytes())?;
    let mut info = String::new();
    if let Some((engine, lost)) = ran_on {
        info.push_str(&format!("engine: {engine}\n"));
        if lost > 0 {
            info.push_str(&format!("runs lost to engines that stopped answering: {lost}\n"));
        }
    }
    if let Some(image) = &raw.image {
        info.push_str(&format!("image: {} {} {}\n", image.name, image.id, image.digest.as_deref().unwrap_or("(no registry digest)")));
    }
    for (phase, secs) in &raw.timings {
        info.push_str(&format!("{phase}: {secs:.3} s\n"));
    }
    match &raw.outcome {
        Outcome::Graded { report } => {
            info.push_str(&format!("resolved: {}\n", report.resolved));
            write(&dir.join("run_instance.log"), info.as_bytes())?;
            let v = grading::report_json(&pred.instance_id, report);
            write(
                &dir.join("report.json"),
                serde_json::to_string_pretty(&v).unwrap().as_bytes(),
            )?;
        }
        Outcome::Error { reason } => {
            info.push_str(&format!("error: {reason}\n"));
            write(&dir.join("run_instance.log"), info.as_bytes())?;
        }
        Outcome::EmptyPatch => {}
    }
    Ok(())
}

fn read_report(path: &Path, id: &str) -> Option<InstanceReport> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut m: BTreeMap<String, InstanceReport> = serde_json::from_str(&text).ok()?;
    m.remove(id)
}

/// Runs the evaluation: loads the dataset and predictions, runs every instance with a patch in
/// `workers` parallel containers (instances with a `report.json` from an earlier run are
/// reused), writes the official layout and the run summary, and returns the summary.
pub async fn run_evaluation(opts: &EvalOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let instances = select_instances(load_instances(&opts.dataset)?, &opts.instance_ids).map_err(|id| {
        SweError::Invalid(format!("instance {id} (from --instance-ids) is not in {}", opts.dataset.display()))
    })?;
    let preds = load_predictions(&opts.predictions, &instances)?;
    for id in preds.keys() {
        if !instances.iter().any(|i| &i.instance_id == id) && opts.instance_ids.is_empty() {
            return Err(SweError::Invalid(format!(
                "prediction for {id} names an instance that is not in {}",
                opts.dataset.display()
            )));
        }
    }
    let model = preds
        .values()
        .next()
        .map(|p| p.model_name_or_path.clone())
        .unwrap_or_else(|| "None".into());
    let model_dir = model_dir_name(&model);
    let log_root = opts
        .output_root
        .join("logs/run_evaluation")
        .join(&opts.run_id)
        .join(&model_dir);
    let fleet = Fleet::connect(&opts.engines, FleetOptions::default()).await?;
    ensure_bundled_images(&fleet.any_runtime()?, &opts.dataset, &instances).await;
    let mut labels = opts.labels.clone();
    labels.insert(LABEL_RUN.into(), opts.run_id.clone());
    let exec_opts = Arc::new(ExecOptions {
        timeout: opts.timeout,
        version: opts.grading,
        labels,
        default_image: opts.default_image.clone(),
        harden: true,
        container: opts.container.clone(),
        pull: opts.pull,
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.workers.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut results: Vec<InstanceResult> = Vec::new();
    for inst in instances
        .iter()
        .filter(|i| preds.contains_key(&i.instance_id))
    {
        let pred = preds[&inst.instance_id].clone();
        let dir = log_root.join(&inst.instance_id);
        if pred
            .model_patch
            .as_deref()
            .is_none_or(|p| p.trim().is_empty())
        {
            results.push(InstanceResult {
                instance_id: inst.instance_id.clone(),
                outcome: Outcome::EmptyPatch,
                seconds: 0.0,
                reused: false,
                image_digest: None,
                image_id: None,
                engine: None,
                engine_failures: 0,
            });
            continue;
        }
        // An earlier report counts only for the same patch (a changed prediction is graded again).
        let same_patch = std::fs::read_to_string(dir.join("patch.diff"))
            .is_ok_and(|old| Some(old.as_str()) == pred.model_patch.as_deref());
        if let Some(report) = read_report(&dir.join("report.json"), &inst.instance_id).filter(|_| same_patch) {
            results.push(InstanceResult {
                instance_id: inst.instance_id.clone(),
                outcome: Outcome::Graded { report },
                seconds: 0.0,
                reused: true,
                image_digest: None,
                image_id: None,
                engine: None,
                engine_failures: 0,
            });
            continue;
        }
        let (fleet, inst, sem, eo) = (fleet.clone(), inst.clone(), sem.clone(), exec_opts.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let t = Instant::now();
            let (raw, engine, engine_failures) = run_instance_on_fleet(&fleet, &inst, pred.model_patch.as_deref(), &eo).await?;
            let seconds = t.elapsed().as_secs_f64();
            let ran_on = engine.as_deref().map(|e| (e, engine_failures));
            let outcome = match write_instance_files(&dir, &pred, &raw, ran_on) {
                Ok(()) => raw.outcome,
                Err(e) => Outcome::Error {
                    reason: format!("could not write outputs: {e}"),
                },
            };
            tracing::info!(instance = %inst.instance_id, seconds, ?outcome, "evaluated");
            Ok::<_, SandboxError>(InstanceResult {
                instance_id: inst.instance_id.clone(),
                outcome,
                seconds,
                reused: false,
                image_digest: raw.image.as_ref().and_then(|i| i.digest.clone()),
                image_id: raw.image.map(|i| i.id),
                engine,
                engine_failures,
            })
        });
    }
    let to_run = set.len();
    let mut done = 0;
    // every engine down: the instances in flight end, the finished ones keep their files (a
    // resume reuses them) and the run stops with the error
    let mut stopped = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(r)) => {
                done += 1;
                if let Some(p) = &opts.progress {
                    p(&r, done, to_run);
                }
                results.push(r)
            }
            Ok(Err(e)) => stopped = Some(e),
            Err(e) => {
                return Err(SweError::Invalid(format!(
                    "an evaluation task panicked: {e}"
                )))
            }
        }
    }
    if let Some(e) = stopped {
        return Err(e.into());
    }
    let mut summary = summarize(&instances, &preds, &results, opts.grading);
    summary.wall_seconds = started.elapsed().as_secs_f64();
    summary.engine_reruns = results.iter().map(|r| r.engine_failures).sum();
    if fleet.len() > 1 {
        summary.engines = results.iter().filter_map(|r| Some((r.instance_id.clone(), r.engine.clone()?))).collect();
    }
    summary.fleet = Some(fleet.metrics());
    let path = opts
        .output_root
        .join(format!("{}.{}.json", model_dir, opts.run_id));
    write(
        &path,
        serde_json::to_string_pretty(&summary).unwrap().as_bytes(),
    )?;
    summary.summary_path = path;
    Ok(summary)
}

fn summarize(
    instances: &[TaskInstance],
    preds: &BTreeMap<String, Prediction>,
    results: &[InstanceResult],
    grading: GradingVersion,
) -> RunSummary {
    let mut s = RunSummary {
        total_instances: instances.len(),
        schema_version: 2,
        grading,
        ..Default::default()
    };
    let by_id: BTreeMap<&str, &InstanceResult> = results
        .iter()
        .map(|r| (r.instance_id.as_str(), r))
        .collect();
    for r in results {
        if let Some(image) = r.image_digest.as_ref().or(r.image_id.as_ref()) {
            s.images.insert(r.instance_id.clone(), image.clone());
        }
    }
    for inst in instances {
        let id = inst.instance_id.clone();
        if !preds.contains_key(&id) {
            s.incomplete_ids.push(id);
            continue;
        }
        s.submitted_ids.push(id.clone());
        match by_id.get(id.as_str()).map(|r| &r.outcome) {
            Some(Outcome::Graded { report }) => {
                s.completed_ids.push(id.clone());
                if let Some(reason) = &report.refused {
                    s.refused.insert(id.clone(), reason.clone());
                    s.suspected_reward_hacks += usize::from(report.suspected_reward_hack());
                }
                if report.resolved {
                    s.resolved_ids.push(id);
                } else {
                    s.unresolved_ids.push(id);
                }
            }
            Some(Outcome::EmptyPatch) => s.empty_patch_ids.push(id),
            Some(Outcome::Error { reason }) => {
                s.errors.insert(id.clone(), reason.clone());
                s.error_ids.push(id);
            }
            None => s.incomplete_ids.push(id),
        }
    }
    s.submitted_instances = s.submitted_ids.len();
    s.completed_instances = s.completed_ids.len();
    s.resolved_instances = s.resolved_ids.len();
    s.unresolved_instances = s.unresolved_ids.len();
    s.empty_patch_instances = s.empty_patch_ids.len();
    s.error_instances = s.error_ids.len();
    s
}

/// `forge eval regrade`: re-grades the `test_output.txt` logs under `logs_dir` (the `{model}`
/// level of the layout) without Docker, rewrites each `report.json`, and writes the run summary
/// `{model}.{run_id}.json` next to `logs/` (three levels above `logs_dir`'s parent), or into
/// `logs_dir` when the layout differs.
pub fn regrade(
    dataset: &Path,
    logs_dir: &Path,
    run_id: &str,
    version: GradingVersion,
) -> Result<RunSummary> {
    let started = Instant::now();
    let instances = load_instances(dataset)?;
    let mut preds = BTreeMap::new();
    let mut results = Vec::new();
    let model = logs_dir
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "None".into());
    for inst in &instances {
        let dir = logs_dir.join(&inst.instance_id);
        let log_path = dir.join("test_output.txt");
        if !log_path.exists() {
            continue;
        }
        let patch = std::fs::read_to_string(dir.join("patch.diff")).ok();
        preds.insert(
            inst.instance_id.clone(),
            Prediction {
                instance_id: inst.instance_id.clone(),
                model_name_or_path: model.clone(),
                model_patch: patch.clone(),
            },
        );
        let log = std::fs::read_to_string(&log_path).map_err(|e| SweError::io(&log_path, e))?;
        let outcome = if patch.as_deref().is_none_or(|p| p.trim().is_empty()) {
            Outcome::EmptyPatch
        } else if let Some(reason) = std::fs::read_to_string(dir.join("run_instance.log"))
            .ok()
            .and_then(|l| {
                l.lines()
                    .find_map(|x| x.strip_prefix("error: "))
                    .map(str::to_string)
            })
        {
            Outcome::Error { reason }
        } else if log.contains(APPLY_PATCH_FAIL) {
            // As the first grading had it: an error, not an instance left to run.
            Outcome::Error { reason: PATCH_NOT_APPLIED.into() }
        } else {
            let report = grading::grade(inst, patch.as_deref(), &log, version);
            let v = grading::report_json(&inst.instance_id, &report);
            write(
                &dir.join("report.json"),
                serde_json::to_string_pretty(&v).unwrap().as_bytes(),
            )?;
            Outcome::Graded { report }
        };
        results.push(InstanceResult {
            instance_id: inst.instance_id.clone(),
            outcome,
            seconds: 0.0,
            reused: false,
            image_digest: None,
            image_id: None,
            engine: None,
            engine_failures: 0,
        });
    }
    if results.is_empty() {
        return Err(SweError::Invalid(format!(
            "no `<instance_id>/test_output.txt` of an instance of {} under {}; pass the {{model}} level of logs/run_evaluation/{{run_id}}/{{model}}",
            dataset.display(),
            logs_dir.display()
        )));
    }
    let mut summary = summarize(&instances, &preds, &results, version);
    summary.wall_seconds = started.elapsed().as_secs_f64();
    // logs/run_evaluation/{run_id}/{model} → root is four levels up.
    let root = logs_dir
        .ancestors()
        .nth(4)
        .filter(|_| {
            logs_dir
                .ancestors()
                .nth(2)
                .is_some_and(|p| p.ends_with("logs/run_evaluation"))
        })
        .map(Path::to_path_buf)
        .unwrap_or_else(|| logs_dir.to_path_buf());
    let path = root.join(format!("{model}.{run_id}.json"));
    write(
        &path,
        serde_json::to_string_pretty(&summary).unwrap().as_bytes(),
    )?;
    summary.summary_path = path;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_commands_are_wrapped() {
        assert!(harden_test_cmd("pytest -rA")
            .starts_with("PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -I -c"));
        assert!(harden_test_cmd("pytest -rA").ends_with("' -rA"));
        assert!(harden_test_cmd("python -m pytest").contains("os._exit"));
        assert_eq!(harden_test_cmd("pytestx -q"), "pytestx -q");
        assert_eq!(
            harden_test_cmd("./tests/runtests.py"),
            "./tests/runtests.py"
        );
    }

    #[test]
    fn eval_script_restores_tests_and_wraps_pytest() {
        let inst: TaskInstance = serde_json::from_value(serde_json::json!({
            "repo": "forge/x", "instance_id": "x-1", "base_commit": "abc123",
            "test_patch": "diff --git a/tests/test_a.py b/tests/test_a.py\n--- a/tests/test_a.py\n+++ b/tests/test_a.py\n@@ -1 +1,2 @@\n x\n+y\n",
            "FAIL_TO_PASS": ["tests/test_a.py::t"], "PASS_TO_PASS": [], "test_cmd": "pytest -rA"
        }))
        .unwrap();
        let s = eval_script(&inst, true).unwrap();
        assert!(s.contains("restore 'tests/test_a.py'\n"), "{s}");
        assert!(s.contains("os._exit") && s.contains("python3 -I"));
        // every git call of the grader runs without hooks
        assert!(s.lines().filter(|l| l.split_whitespace().any(|w| w == "git")).all(|l| l.contains("core.hooksPath=/dev/null")), "{s}");
        let start = s.find(grading::START_TEST_OUTPUT).unwrap();
        assert!(
            s.find("apply --verbose").unwrap() < start,
            "test patch applied before the tests"
        );
        let soft = eval_script(&inst, false).unwrap();
        assert!(soft.contains("restore 'tests/test_a.py'\n") && !soft.contains("os._exit"));
        // no test_cmd and no eval_script: a clear error
        let mut bare = inst.clone();
        bare.test_cmd = None;
        assert!(eval_script(&bare, true)
            .unwrap_err()
            .to_string()
            .contains("x-1"));
        bare.eval_script = Some("echo hi".into());
        assert_eq!(eval_script(&bare, true).unwrap(), "echo hi");
    }


    #[test]
    fn only_machinery_failures_count_as_infrastructure() {
        let error = |reason: &str| Outcome::Error { reason: reason.to_string() };
        assert_eq!(error("container failure: no space").infrastructure_failure(), Some("container failure: no space"));
        assert_eq!(error("image missing: forge-swe/x:1").infrastructure_failure(), Some("image missing: forge-swe/x:1"));
        assert_eq!(error(PATCH_NOT_APPLIED).infrastructure_failure(), None);
        assert_eq!(error(&format!("{TESTS_TIMED_OUT} 30 s")).infrastructure_failure(), None);
        assert_eq!(Outcome::EmptyPatch.infrastructure_failure(), None);
    }
}
