//! The Foundry: eval-ready tasks mined from a repository's git history (`forge foundry mine`).
//!
//! 1. Walk the first-parent history ([`history`]); a *candidate* changes Python source and tests.
//! 2. Build its environment at the commit ([`env`]): the layout decides the first strategy, each
//!    failed build the next; commits whose dependency files are identical share one image.
//! 3. Run the changed test files at the parent with the commit's tests applied and at the
//!    commit; FAIL_TO_PASS / PASS_TO_PASS from the per-test statuses
//!    ([`crate::validate::derive_tests`]), then the official eval-readiness check
//!    ([`crate::validate::validate_one`]): what `forge tasks validate` accepts, and nothing else,
//!    is written out.
//! 4. Prune images ([`prune`]): every task is tried on the other images of its repository and
//!    moved where its tests still validate, until no move applies.
//!
//! Output: the tasks in the SWE-bench schema (gold `patch` = the commit's non-test part,
//! `test_patch` = its test part), and a report of everything scanned and why it was dropped.

pub mod env;
pub mod history;
pub mod prune;
pub mod statement;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_sandbox::Runtime;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};

use crate::error::{Result, SweError};
use crate::harness::ExecOptions;
use crate::instance::TaskInstance;
use env::{Attempt, BuildNetwork, BuiltEnv, EnvRequest, Layout};
use history::{ChangeSplit, CommitInfo, Git};

/// `forge foundry mine` options.
#[derive(Debug, Clone)]
pub struct MineOptions {
    /// A local repository (work tree or bare) or a URL git can clone.
    pub repo: String,
    /// The revision whose first-parent history is walked (default `HEAD`).
    pub rev: String,
    /// Only commits authored on or after this date (git's date syntax).
    pub since: Option<String>,
    /// At most this many candidates are built and checked (the newest).
    pub max: Option<usize>,
    /// Candidates processed at once.
    pub workers: usize,
    /// `owner/name` of the tasks (default: from the URL or `origin`, else `local/<dir>`).
    pub name: Option<String>,
    /// Where clones are kept (default: a temporary directory).
    pub work_dir: Option<PathBuf>,
    pub network: BuildNetwork,
    /// Strategies tried per environment before the candidate is dropped.
    pub max_attempts: usize,
    /// Per test run.
    pub test_timeout: Duration,
    /// Try moving tasks onto fewer images ([`prune`]).
    pub prune: bool,
    /// Rewrite commit messages into issue-style statements ([`statement`]).
    pub rewrite: Option<crate::chat::ChatEndpoint>,
}

impl Default for MineOptions {
    fn default() -> Self {
        MineOptions {
            repo: String::new(),
            rev: "HEAD".into(),
            since: None,
            max: None,
            workers: 2,
            name: None,
            work_dir: None,
            network: BuildNetwork::default(),
            max_attempts: 6,
            test_timeout: Duration::from_secs(900),
            prune: true,
            rewrite: None,
        }
    }
}

/// What happened to one scanned commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitVerdict {
    pub commit: String,
    pub subject: String,
    /// `task` (eval-ready, written out), `passed_over` (not a candidate) or `dropped`.
    pub verdict: String,
    /// Why it was passed over or dropped (empty for tasks).
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub env_attempts: Vec<Attempt>,
    /// The longest test run of the task's validation (without or with the fix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_seconds: Option<f64>,
}

impl CommitVerdict {
    fn new(c: &CommitInfo, verdict: &str, reason: &str) -> Self {
        CommitVerdict {
            commit: c.sha.clone(),
            subject: c.subject.clone(),
            verdict: verdict.into(),
            reason: reason.into(),
            instance_id: None,
            image: None,
            env_attempts: Vec::new(),
            test_seconds: None,
        }
    }
}

/// The run's report (written next to the output as `<out>.report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MineReport {
    pub repo: String,
    pub head: String,
    pub commits_scanned: usize,
    pub candidates: usize,
    /// Candidates checked (≤ candidates under `--max`).
    pub candidates_checked: usize,
    pub tasks: usize,
    /// Reason → count, over passed-over and dropped commits.
    pub drop_reasons: BTreeMap<String, usize>,
    pub images: prune::ImageReport,
    /// Statements rewritten into issues (the others keep the commit message, with the reason).
    pub statements_rewritten: usize,
    pub minutes: f64,
    pub commits: Vec<CommitVerdict>,
}

/// A short drop-reason class for the counts (the full reason stays per commit).
fn reason_class(reason: &str) -> String {
    reason.split([':', '(']).next().unwrap_or(reason).trim().to_string()
}

/// Mines `opts.repo`; returns the eval-ready tasks (oldest first) and the report.
pub async fn mine(rt: &Runtime, opts: &MineOptions) -> Result<(Vec<TaskInstance>, MineReport)> {
    let started = Instant::now();
    let tmp;
    let work = match &opts.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().map_err(|e| SweError::io(std::env::temp_dir(), e))?;
            tmp.path().to_path_buf()
        }
    };
    let (git, name) = clone_repo(&opts.repo, &opts.rev, opts.name.as_deref(), &work)?;
    let head = git.run(&["rev-parse", "HEAD"])?.trim().to_string();
    let repo_tar = Arc::new(repo_tar(git.dir())?);
    let commits = history::first_parent_commits(&git, "HEAD", opts.since.as_deref())?;
    let mut verdicts: Vec<CommitVerdict> = Vec::new();
    let mut candidates: Vec<(CommitInfo, ChangeSplit)> = Vec::new();
    for c in &commits {
        let passed_over = |reason: &str| CommitVerdict::new(c, "passed_over", reason);
        if c.parent.is_none() {
            verdicts.push(passed_over("root commit (no parent to start from)"));
            continue;
        }
        let split = ChangeSplit::of(&history::changed_files(&git, c)?);
        match split.pass_over_reason() {
            Some(r) => verdicts.push(passed_over(r)),
            None => candidates.push((c.clone(), split)),
        }
    }
    let n_candidates = candidates.len();
    if let Some(max) = opts.max {
        // The newest `max`; the older ones are recorded as not checked.
        let skip = candidates.len().saturating_sub(max);
        for (c, _) in candidates.drain(..skip) {
            verdicts.push(CommitVerdict::new(&c, "passed_over", &format!("beyond --max {max} (older candidates are not checked)")));
        }
    }
    let ctx = Arc::new(MineContext {
        rt: rt.clone(),
        git: git.clone(),
        head: head.clone(),
        name: name.clone(),
        repo_tar,
        network: opts.network.clone(),
        envs: Mutex::new(BTreeMap::new()),
        exec: ExecOptions { timeout: opts.test_timeout, ..Default::default() },
        max_attempts: opts.max_attempts,
    });
    let sem = Arc::new(Semaphore::new(opts.workers.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (idx, (c, split)) in candidates.into_iter().enumerate() {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            (idx, check_candidate(&ctx, &c, &split).await)
        });
    }
    let mut checked: Vec<(usize, CommitVerdict, Option<TaskInstance>)> = Vec::new();
    while let Some(r) = set.join_next().await {
        let (idx, (verdict, inst)) = r.map_err(|e| SweError::Invalid(format!("a candidate check panicked: {e}")))?;
        tracing::info!(commit = %verdict.commit, verdict = %verdict.verdict, reason = %verdict.reason, "candidate checked");
        checked.push((idx, verdict, inst));
    }
    checked.sort_by_key(|(i, _, _)| *i);
    let candidates_checked = checked.len();
    let mut tasks = Vec::new();
    for (_, v, inst) in checked {
        verdicts.push(v);
        tasks.extend(inst);
    }
    let images = if opts.prune {
        let seconds: BTreeMap<String, f64> =
            verdicts.iter().filter_map(|v| Some((v.instance_id.clone()?, v.test_seconds?))).collect();
        prune::prune(rt, &mut tasks, &ctx.exec, &seconds, opts.workers).await?
    } else {
        prune::ImageReport::measure(rt, &tasks, &tasks).await?
    };
    if let Some(ep) = &opts.rewrite {
        let client = ep.client().map_err(|e| SweError::Invalid(format!("--rewrite-endpoint {}: {e}", ep.chat_url())))?;
        for t in tasks.iter_mut() {
            statement::rewrite(ep, &client, t).await;
        }
    }
    let statements_rewritten = tasks
        .iter()
        .filter(|t| t.extra.get("problem_statement_source").and_then(|v| v.as_str()).is_some_and(|s| s.starts_with("rewritten")))
        .count();
    // The image each task ends on.
    for v in &mut verdicts {
        if let Some(t) = tasks.iter().find(|t| Some(&t.instance_id) == v.instance_id.as_ref()) {
            v.image = t.image.clone();
        }
    }
    let order: BTreeMap<&str, usize> = commits.iter().enumerate().map(|(i, c)| (c.sha.as_str(), i)).collect();
    verdicts.sort_by_key(|v| order.get(v.commit.as_str()).copied().unwrap_or(usize::MAX));
    let mut drop_reasons = BTreeMap::new();
    for v in verdicts.iter().filter(|v| v.verdict != "task") {
        *drop_reasons.entry(reason_class(&v.reason)).or_insert(0) += 1;
    }
    let report = MineReport {
        repo: name,
        head,
        commits_scanned: commits.len(),
        candidates: n_candidates,
        candidates_checked,
        tasks: tasks.len(),
        drop_reasons,
        images,
        statements_rewritten,
        minutes: started.elapsed().as_secs_f64() / 60.0,
        commits: verdicts,
    };
    Ok((tasks, report))
}

/// One environment's build, done once: the image, or every attempt that failed.
type EnvCell = tokio::sync::OnceCell<std::result::Result<BuiltEnv, Vec<Attempt>>>;

/// Shared state of one mining run.
struct MineContext {
    rt: Runtime,
    git: Git,
    head: String,
    name: String,
    repo_tar: Arc<Vec<u8>>,
    network: BuildNetwork,
    /// Environment key → its build (one build per key, whoever asks first).
    envs: Mutex<BTreeMap<String, Arc<EnvCell>>>,
    exec: ExecOptions,
    max_attempts: usize,
}

/// The image tag of an environment: `forge-foundry/<owner>__<name>:env-<key>`.
fn env_tag(name: &str, key: &str) -> String {
    let slug: String = name
        .to_ascii_lowercase()
        .replace('/', "__")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '-' })
        .collect();
    format!("forge-foundry/{slug}:env-{}", &key[..12.min(key.len())])
}

async fn check_candidate(ctx: &MineContext, c: &CommitInfo, split: &ChangeSplit) -> (CommitVerdict, Option<TaskInstance>) {
    let mut verdict = CommitVerdict::new(c, "dropped", "");
    match build_task(ctx, c, split, &mut verdict).await {
        Ok(inst) => {
            verdict.verdict = "task".into();
            verdict.instance_id = Some(inst.instance_id.clone());
            verdict.image = inst.image.clone();
            (verdict, Some(inst))
        }
        Err(reason) => {
            verdict.reason = reason;
            (verdict, None)
        }
    }
}

/// The candidate as an eval-ready task, or why not.
async fn build_task(ctx: &MineContext, c: &CommitInfo, split: &ChangeSplit, verdict: &mut CommitVerdict) -> std::result::Result<TaskInstance, String> {
    let git = &ctx.git;
    let e = |e: SweError| e.to_string();
    let mut code = split.source.clone();
    code.extend(split.other.iter().cloned());
    let patch = history::diff_of(git, c, &code).map_err(e)?;
    let test_patch = history::diff_of(git, c, &split.tests).map_err(e)?;
    if patch.contains("\nGIT binary patch") && !split.source.iter().any(|f| patch.contains(&format!("b/{f}\n"))) {
        return Err("the source change is binary".into());
    }
    // A fix the hardened grader would refuse as a prediction (it touches files the eval
    // script runs, like setup.py) can never be resolved: no task.
    if let Some(refusal) = crate::integrity::refusal_for_patch(&patch) {
        return Err(format!("the gold patch would be refused by the grader: {refusal}"));
    }
    let (problem_statement, hints_text) = history::statement_of(git, c).map_err(e)?;
    // The environment, at the commit (its dependencies as of the fix).
    let layout = Layout::at(git, &c.sha).map_err(e)?;
    let key = layout.key(git, &c.sha, &ctx.head).map_err(e)?;
    let tag = env_tag(&ctx.name, &key);
    let cell = ctx.envs.lock().await.entry(key.clone()).or_default().clone();
    let test_files: Vec<String> = split.tests.iter().filter(|f| f.ends_with(".py") && git.show(&c.sha, f).is_some()).cloned().collect();
    let built = cell
        .get_or_init(|| async {
            let req = EnvRequest {
                git,
                repo_tar: &ctx.repo_tar,
                commit: &c.sha,
                date: &c.date,
                test_files: &test_files,
                tag: tag.clone(),
                max_attempts: ctx.max_attempts,
            };
            env::build_env(&ctx.rt, &ctx.network, &req).await
        })
        .await
        .clone();
    let env = match built {
        Ok(env) => {
            if env.commit == c.sha {
                verdict.env_attempts = env.attempts.clone();
            }
            env
        }
        Err(attempts) => {
            let last = attempts.last().map(|a| a.strategy.clone()).unwrap_or_default();
            verdict.env_attempts = attempts;
            return Err(format!("environment build failed: {last} was the last of the strategies tried"));
        }
    };
    let short = &c.sha[..12.min(c.sha.len())];
    let mut inst = TaskInstance {
        repo: ctx.name.clone(),
        instance_id: format!("{}-{short}", ctx.name.replace('/', "__")),
        base_commit: c.parent.clone().unwrap_or_default(),
        patch,
        test_patch,
        problem_statement,
        hints_text,
        created_at: c.date.clone(),
        version: format!("env-{}", &key[..12.min(key.len())]),
        fail_to_pass: Vec::new(),
        pass_to_pass: Vec::new(),
        environment_setup_commit: Some(env.commit.clone()),
        difficulty: None,
        log_parser: Some("pytest".into()),
        eval_type: None,
        eval_script: None,
        image: Some(env.image.clone()),
        test_cmd: Some(env.test_cmd.clone()),
        shell_init: None,
        start_ref: None,
        tests_ref: None,
        source: None,
        extra: BTreeMap::new(),
    };
    let (f2p, p2p) = crate::validate::derive_tests(&ctx.rt, &inst, &ctx.exec)
        .await
        .map_err(|e| format!("tests did not run: {}", env::tail(&e.to_string(), 600)))?;
    if f2p.is_empty() {
        return Err("no FAIL_TO_PASS (no test fails before the change and passes after it)".into());
    }
    (inst.fail_to_pass, inst.pass_to_pass) = (f2p, p2p);
    let v = crate::validate::validate_one(&ctx.rt, &inst, &ctx.exec).await;
    if !v.ok {
        return Err(format!("not eval-ready on a second run (flaky or order-dependent tests): {}", v.problems.join("; ")));
    }
    verdict.test_seconds = Some(v.before_seconds.max(v.after_seconds));
    Ok(inst)
}

/// Clones `repo` into `work/repo` (no hard links: the image gets its own copy) at `rev`,
/// detached, without remotes. Returns the clone and the tasks' `owner/name`.
fn clone_repo(repo: &str, rev: &str, name: Option<&str>, work: &Path) -> Result<(Git, String)> {
    let dest = work.join("repo");
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| SweError::io(&dest, e))?;
    }
    std::fs::create_dir_all(work).map_err(|e| SweError::io(work, e))?;
    let local = Path::new(repo).exists();
    let out = std::process::Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(repo)
        .arg(&dest)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .map_err(|e| SweError::Invalid(format!("cannot run `git` ({e}); install git to mine tasks")))?;
    if !out.status.success() {
        return Err(SweError::Invalid(format!(
            "cannot clone {repo}: {}; pass a local repository path or a URL git can clone",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let git = Git::new(&dest);
    let origin_url = if local { Git::new(repo).run(&["remote", "get-url", "origin"]).ok() } else { Some(repo.to_string()) };
    let sha = git.run(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")]).map_err(|_| {
        SweError::Invalid(format!("{rev} is not a commit of {repo}; pass --rev with a branch, tag or commit it has"))
    })?;
    git.run(&["checkout", "--quiet", "--detach", sha.trim()])?;
    // Only history up to `rev` is kept: no branch, tag or remote names later commits.
    let refs = git.run(&["for-each-ref", "--format=%(refname)"])?;
    for r in refs.lines().filter(|r| !r.is_empty()) {
        let _ = git.run(&["update-ref", "-d", r]);
    }
    let _ = git.run(&["remote", "remove", "origin"]);
    let _ = git.run(&["reflog", "expire", "--expire=now", "--all"]);
    let _ = git.run(&["gc", "--quiet", "--prune=now"]);
    let name = match name {
        Some(n) => n.to_string(),
        None => origin_url
            .as_deref()
            .and_then(owner_name_of_url)
            .unwrap_or_else(|| {
                let dir = Path::new(repo.trim_end_matches('/'))
                    .file_name()
                    .map(|s| s.to_string_lossy().trim_end_matches(".git").to_string())
                    .unwrap_or_else(|| "repo".into());
                format!("local/{dir}")
            }),
    };
    Ok((git, name))
}

/// `https://github.com/owner/name(.git)` or `git@host:owner/name.git` → `owner/name`.
fn owner_name_of_url(url: &str) -> Option<String> {
    if !(url.contains("://") || url.contains('@')) {
        return None;
    }
    let path = url.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = path.rsplit(['/', ':']);
    let name = parts.next()?;
    let owner = parts.next()?;
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

/// The clone as a tar of `testbed/.git` (the work tree is checked out inside containers).
fn repo_tar(dir: &Path) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all("testbed/.git", dir.join(".git")).map_err(|e| SweError::io(dir, e))?;
    tar.into_inner().map_err(|e| SweError::io(dir, e))
}

/// `<out>.report.json` for an output file.
pub fn report_path(out: &Path) -> PathBuf {
    let mut name = out.file_stem().map(|s| s.to_os_string()).unwrap_or_default();
    name.push(".report.json");
    out.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(owner_name_of_url("https://github.com/andialbrecht/sqlparse.git").as_deref(), Some("andialbrecht/sqlparse"));
        assert_eq!(owner_name_of_url("git@github.com:pallets/click.git").as_deref(), Some("pallets/click"));
        assert_eq!(owner_name_of_url("/srv/repos/x"), None);
        assert_eq!(env_tag("Local/My Repo", "0123456789abcdef"), "forge-foundry/local__my-repo:env-0123456789ab");
        assert_eq!(report_path(Path::new("/x/mined.jsonl")), Path::new("/x/mined.report.json"));
        assert_eq!(reason_class("environment build failed: venv was the last"), "environment build failed");
    }
}
