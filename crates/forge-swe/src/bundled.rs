//! The bundled task set: small Python projects under `tasks/<repo>/` turned into git repositories
//! (one linear history per project, one base commit per task) and into one Docker image per
//! project, built on the base image without a registry or a Dockerfile (upload + `docker commit`).
//!
//! Source layout (see `tasks/README.md`):
//! `tasks/<repo>/repo/**` is the project after every fix; `tasks/<repo>/<task>/task.json` holds
//! the instance id and problem statement; `tasks/<repo>/<task>/fix.patch` the task's commit (fix
//! and new tests, a `git diff`). No file is stored twice: commit 0 is `repo/` with every
//! `fix.patch` reverse-applied (last task first); commit k applies task k's `fix.patch`, and the
//! last commit must give `repo/` back. Task k's base commit is commit k-1, its gold patch the
//! non-test part of commit k, its test patch the test part. Hashes are deterministic (fixed names
//! and dates), so `tasks/bundled.jsonl` can be checked in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use forge_sandbox::{ImageInfo, Runtime, SandboxSpec, DEFAULT_IMAGE};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SweError};
use crate::instance::{load_instances, patch_files, TaskInstance};

/// The image every task image is built on.
pub fn base_image() -> String {
    std::env::var("FORGE_SANDBOX_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string())
}

/// `tasks/` of this checkout (override: `FORGE_SWE_TASKS`).
pub fn default_tasks_dir() -> PathBuf {
    if let Ok(d) = std::env::var("FORGE_SWE_TASKS") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tasks")
}

/// The task sources a dataset file belongs to: its own directory when that holds bundled
/// projects (`tasks-demo/heldout.jsonl` → `tasks-demo/`), else [`default_tasks_dir`].
pub fn tasks_dir_for(dataset: &Path) -> PathBuf {
    let own = dataset.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let holds_projects = std::fs::read_dir(own)
        .map(|entries| entries.filter_map(|e| e.ok()).any(|e| e.path().join("repo").is_dir()))
        .unwrap_or(false);
    if holds_projects {
        own.to_path_buf()
    } else {
        default_tasks_dir()
    }
}

/// The checked-in dataset of the bundled tasks.
pub fn dataset_path(tasks_dir: &Path) -> PathBuf {
    tasks_dir.join("bundled.jsonl")
}

/// Test command of the bundled tasks (test files are appended).
pub const TEST_CMD: &str = "pytest -rA -p no:cacheprovider";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskMeta {
    pub instance_id: String,
    pub problem_statement: String,
    #[serde(default)]
    pub hints_text: String,
    pub created_at: String,
    #[serde(default)]
    pub difficulty: Option<String>,
}

/// One task's sources.
#[derive(Debug, Clone)]
pub struct TaskSource {
    pub dir: PathBuf,
    pub meta: TaskMeta,
    /// Paths (relative to the repo root) the task's `fix.patch` touches.
    pub files: Vec<String>,
}

impl TaskSource {
    /// The task's commit as a `git diff` (fix and new tests).
    pub fn fix_patch(&self) -> PathBuf {
        self.dir.join("fix.patch")
    }
}

/// One project and its tasks (in history order).
#[derive(Debug, Clone)]
pub struct RepoSource {
    pub name: String,
    pub dir: PathBuf,
    pub tasks: Vec<TaskSource>,
}

impl RepoSource {
    /// The image name for a history head.
    pub fn image_tag(&self, head: &str) -> String {
        format!("forge-swe/{}:{}", self.name, &head[..12])
    }
}

/// A task after the history was built.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltTask {
    pub instance_id: String,
    pub base_commit: String,
    pub patch: String,
    pub test_patch: String,
}

/// A built repository: its working copy on the host, head commit and tasks.
#[derive(Debug, Clone)]
pub struct BuiltRepo {
    pub source: RepoSource,
    pub workdir: PathBuf,
    pub head: String,
    pub tasks: Vec<BuiltTask>,
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| SweError::io(path, e))
}

fn files_under(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in io(&d, std::fs::read_dir(&d))? {
            let e = io(&d, e)?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name == "__pycache__" || name.ends_with(".pyc") || name == ".pytest_cache" {
                continue;
            }
            if io(&p, e.file_type())?.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Finds the projects under `tasks_dir` (directories holding `repo/`).
pub fn discover(tasks_dir: &Path) -> Result<Vec<RepoSource>> {
    let mut repos = Vec::new();
    let mut entries: Vec<PathBuf> = io(tasks_dir, std::fs::read_dir(tasks_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("repo").is_dir())
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut task_dirs: Vec<PathBuf> = io(&dir, std::fs::read_dir(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("task.json").is_file())
            .collect();
        task_dirs.sort();
        let mut tasks = Vec::new();
        for td in task_dirs {
            let mp = td.join("task.json");
            let text = io(&mp, std::fs::read_to_string(&mp))?;
            let meta: TaskMeta = serde_json::from_str(&text).map_err(|e| SweError::BadFile {
                path: mp.clone(),
                detail: format!("not a task description: {e}"),
            })?;
            let patch_path = td.join("fix.patch");
            let patch = io(&patch_path, std::fs::read_to_string(&patch_path))?;
            let files = patch_files(&patch);
            let bad = |detail: String| SweError::BadFile {
                path: patch_path.clone(),
                detail,
            };
            if !files.iter().any(|f| is_test_file(f)) || files.iter().all(|f| is_test_file(f)) {
                return Err(bad(
                    "a task's fix.patch must change both source and test files".into(),
                ));
            }
            if let Some(f) = files.iter().find(|f| !dir.join("repo").join(f).is_file()) {
                return Err(bad(format!("{f} is not a file of {name}/repo")));
            }
            tasks.push(TaskSource {
                dir: td,
                meta,
                files,
            });
        }
        repos.push(RepoSource { name, dir, tasks });
    }
    Ok(repos)
}

/// True for files that belong to the test patch: anything under a `test`, `tests` or `testing`
/// directory, `test_*.py` / `*_test.py` files and `conftest.py` (SWE-bench's split of a fix
/// into the gold patch and the test patch).
pub fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let in_test_dir = path
        .split('/')
        .rev()
        .skip(1)
        .any(|dir| matches!(dir, "test" | "tests" | "testing"));
    in_test_dir || name.starts_with("test_") || name.ends_with("_test.py") || name == "conftest.py"
}

fn git(dir: &Path, args: &[&str], date: &str) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "forge")
        .env("GIT_AUTHOR_EMAIL", "forge@localhost")
        .env("GIT_COMMITTER_NAME", "forge")
        .env("GIT_COMMITTER_EMAIL", "forge@localhost")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            SweError::Invalid(format!(
                "cannot run `git` on this machine ({e}); install git to build the bundled tasks"
            ))
        })?;
    if !out.status.success() {
        return Err(SweError::Invalid(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    if let Some(p) = dst.parent() {
        io(p, std::fs::create_dir_all(p))?;
    }
    let data = io(src, std::fs::read(src))?;
    io(dst, std::fs::write(dst, data))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        io(
            dst,
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o644)),
        )?;
    }
    Ok(())
}

/// Builds the git history of one project in `work` (created, must not exist) on the host.
pub fn build_repo(src: &RepoSource, work: &Path) -> Result<BuiltRepo> {
    let repo_dir = src.dir.join("repo");
    let repo_files = files_under(&repo_dir)?;
    io(work, std::fs::create_dir_all(work))?;
    for f in &repo_files {
        copy_file(&repo_dir.join(f), &work.join(f))?;
    }
    let date = |k: usize| format!("{} +0000", 1_700_000_000 + 86_400 * k as u64);
    git(work, &["init", "-q", "-b", "main"], &date(0))?;
    // Undo the fixes, last first, to reach the state before every task.
    for t in src.tasks.iter().rev() {
        apply_fix(work, t, true)?;
    }
    git(work, &["add", "-A"], &date(0))?;
    git(
        work,
        &[
            "commit",
            "-q",
            "--no-gpg-sign",
            "-m",
            &format!("Import {}", src.name),
        ],
        &date(0),
    )?;
    let mut tasks = Vec::new();
    for (k, t) in src.tasks.iter().enumerate() {
        let base = git(work, &["rev-parse", "HEAD"], &date(0))?
            .trim()
            .to_string();
        apply_fix(work, t, false)?;
        git(work, &["add", "-A"], &date(k + 1))?;
        let title = t
            .meta
            .problem_statement
            .lines()
            .next()
            .unwrap_or("fix")
            .trim_start_matches('#')
            .trim();
        git(
            work,
            &[
                "commit",
                "-q",
                "--no-gpg-sign",
                "-m",
                &format!("Fix: {title}"),
            ],
            &date(k + 1),
        )?;
        let (tests, code): (Vec<&String>, Vec<&String>) =
            t.files.iter().partition(|f| is_test_file(f));
        let diff = |files: &[&String]| -> Result<String> {
            let mut args = vec![
                "diff",
                "--no-color",
                "--no-ext-diff",
                base.as_str(),
                "HEAD",
                "--",
            ];
            args.extend(files.iter().map(|s| s.as_str()));
            git(work, &args, &date(0))
        };
        tasks.push(BuiltTask {
            instance_id: t.meta.instance_id.clone(),
            patch: diff(&code)?,
            test_patch: diff(&tests)?,
            base_commit: base.clone(),
        });
    }
    // Replaying every fix must give `repo/` back, else a fix.patch is out of date.
    let tracked = git(work, &["ls-files"], &date(0))?;
    let tracked: Vec<&str> = tracked.lines().collect();
    let mut differing: Vec<&str> = Vec::new();
    for f in &repo_files {
        let built = std::fs::read(work.join(f)).ok();
        if built != Some(io(&repo_dir.join(f), std::fs::read(repo_dir.join(f)))?) {
            differing.push(f);
        }
    }
    differing.extend(
        tracked
            .iter()
            .filter(|f| !repo_files.iter().any(|r| r == *f)),
    );
    if !differing.is_empty() {
        return Err(SweError::Invalid(format!(
            "replaying the fix.patch files of {} does not give {}/repo back ({}); regenerate the patches",
            src.name,
            src.name,
            differing.join(", ")
        )));
    }
    let head = git(work, &["rev-parse", "HEAD"], &date(0))?
        .trim()
        .to_string();
    Ok(BuiltRepo {
        source: src.clone(),
        workdir: work.to_path_buf(),
        head,
        tasks,
    })
}

/// Applies (or reverts) a task's `fix.patch` to the working tree of `work`.
fn apply_fix(work: &Path, t: &TaskSource, reverse: bool) -> Result<()> {
    // git runs inside `work`: the patch needs an absolute path.
    let patch = t.fix_patch();
    let patch = io(&patch, std::fs::canonicalize(&patch))?;
    let patch = patch.to_string_lossy();
    let mut args = vec!["apply", "--whitespace=nowarn"];
    if reverse {
        args.push("--reverse");
    }
    args.push(&patch);
    git(work, &args, "1700000000 +0000")
        .map(|_| ())
        .map_err(|e| {
            SweError::Invalid(format!(
                "{} of {} does not {} (the patches are replayed in task order on {}/repo): {e}",
                t.fix_patch().display(),
                t.meta.instance_id,
                if reverse { "revert" } else { "apply" },
                t.dir
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })
}

pub(crate) async fn commit(
    rt: &Runtime,
    container: &str,
    tag: &str,
    comment: &str,
    changes: Option<&str>,
) -> Result<()> {
    // "name:tag", or a bare name (tag `latest`); a registry port is not a tag.
    let (repo, tagname) = match tag.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((repo, t)) => (repo, t),
        None => (tag, "latest"),
    };
    let opts = bollard::query_parameters::CommitContainerOptions {
        container: Some(container.to_string()),
        repo: Some(repo.to_string()),
        tag: Some(tagname.to_string()),
        comment: Some(comment.to_string()),
        pause: true,
        changes: changes.map(str::to_string),
        ..Default::default()
    };
    rt.docker()
        .commit_container(opts, bollard::models::ContainerConfig::default())
        .await
        .map_err(|e| SweError::Invalid(format!("docker commit of {tag} failed: {e}")))?;
    Ok(())
}

/// The image task images are built on: the base image plus byte-compiled Python libraries
/// (the base image ships without `__pycache__`, so every fresh container would otherwise spend
/// ~1 s compiling pytest). One shared layer for all projects.
pub async fn ensure_runtime_base(rt: &Runtime) -> Result<String> {
    let base = rt.image_info(&base_image()).await?;
    let id = base.id.trim_start_matches("sha256:");
    let tag = format!("forge-swe/runtime:{}", &id[..12.min(id.len())]);
    if rt.image_info(&tag).await.is_ok() {
        return Ok(tag);
    }
    let mut sb = rt
        .create(&SandboxSpec::new(base_image()).label("forge.swe.build", "runtime"))
        .await?;
    let res = async {
        let o = sb
            .exec(
                &["bash", "-c", "python3 -m compileall -q -j 0 /usr/lib/python3 /usr/lib/python3.* >/dev/null; rm -rf /tmp/.forge; python3 -c 'import pytest'"],
                Some(std::time::Duration::from_secs(300)),
            )
            .await?;
        if o.exit_code != Some(0) {
            return Err(SweError::Invalid(format!("byte-compiling the Python libraries failed: {}", o.output)));
        }
        commit(rt, sb.id(), &tag, "forge-swe runtime base: byte-compiled Python libraries", None).await
    }
    .await;
    let _ = sb.remove().await;
    res?;
    Ok(tag)
}

/// Builds (if missing) the image of a built project: a container from the runtime base image
/// ([`ensure_runtime_base`]) gets the repository (with its history) at `/testbed` and is
/// committed. Returns the tag and its info.
pub async fn ensure_image(rt: &Runtime, built: &BuiltRepo) -> Result<(String, ImageInfo)> {
    let tag = built.source.image_tag(&built.head);
    if let Ok(info) = rt.image_info(&tag).await {
        return Ok((tag, info));
    }
    let runtime_base = ensure_runtime_base(rt).await?;
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all("testbed", &built.workdir)
        .map_err(|e| SweError::io(&built.workdir, e))?;
    let tar = tar
        .into_inner()
        .map_err(|e| SweError::io(&built.workdir, e))?;
    let spec = SandboxSpec::new(runtime_base).label("forge.swe.build", &built.source.name);
    let mut sb = rt.create(&spec).await?;
    let res = async {
        sb.upload_tar("/", tar).await?;
        let o = sb
            .exec(
                &["bash", "-c", "cd /testbed && git status --porcelain && git log --oneline | wc -l && rm -rf /tmp/.forge"],
                Some(std::time::Duration::from_secs(60)),
            )
            .await?;
        if o.exit_code != Some(0) || !o.output.trim().chars().all(|c| c.is_ascii_digit() || c.is_whitespace()) {
            return Err(SweError::Invalid(format!(
                "the repository of {} is not clean inside the image: {}",
                built.source.name, o.output
            )));
        }
        let comment = format!("forge-swe bundled project {}", built.source.name);
        commit(rt, sb.id(), &tag, &comment, Some("WORKDIR /testbed")).await
    }
    .await;
    let _ = sb.remove().await;
    res?;
    Ok((tag.clone(), rt.image_info(&tag).await?))
}

/// The instances of the built projects: metadata from the sources, commits and patches from the
/// built history, test lists from `tests` (instance id → (FAIL_TO_PASS, PASS_TO_PASS)).
pub fn instances_of(
    built: &[BuiltRepo],
    tests: &BTreeMap<String, (Vec<String>, Vec<String>)>,
) -> Vec<TaskInstance> {
    let mut out = Vec::new();
    for b in built {
        for (t, bt) in b.source.tasks.iter().zip(&b.tasks) {
            let (f2p, p2p) = tests.get(&bt.instance_id).cloned().unwrap_or_default();
            out.push(TaskInstance {
                repo: format!("forge/{}", b.source.name),
                instance_id: bt.instance_id.clone(),
                base_commit: bt.base_commit.clone(),
                patch: bt.patch.clone(),
                test_patch: bt.test_patch.clone(),
                problem_statement: t.meta.problem_statement.clone(),
                hints_text: t.meta.hints_text.clone(),
                created_at: t.meta.created_at.clone(),
                version: "1.0".into(),
                fail_to_pass: f2p,
                pass_to_pass: p2p,
                environment_setup_commit: Some(b.head.clone()),
                difficulty: t.meta.difficulty.clone(),
                log_parser: Some("pytest".into()),
                eval_type: None,
                eval_script: None,
                image: Some(b.source.image_tag(&b.head)),
                test_cmd: Some(TEST_CMD.into()),
                shell_init: None,
                start_ref: None,
                tests_ref: None,
                source: None,
                extra: BTreeMap::new(),
            });
        }
    }
    out
}

/// Builds every project's history in a temporary directory and its image (when missing).
pub async fn build_all(
    rt: &Runtime,
    tasks_dir: &Path,
) -> Result<(Vec<BuiltRepo>, tempfile::TempDir)> {
    let tmp = tempfile::tempdir().map_err(|e| SweError::io(std::env::temp_dir(), e))?;
    let mut built = Vec::new();
    for src in discover(tasks_dir)? {
        let b = build_repo(&src, &tmp.path().join(&src.name))?;
        ensure_image(rt, &b).await?;
        built.push(b);
    }
    Ok((built, tmp))
}

/// Builds the images (when missing) and loads the checked-in dataset, checking that it matches
/// the sources (commits, patches, images). This is what tests and `forge eval` on the bundled
/// set need before running.
pub async fn prepare(rt: &Runtime, tasks_dir: &Path) -> Result<Vec<TaskInstance>> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _g = LOCK.lock().await;
    let (built, _tmp) = build_all(rt, tasks_dir).await?;
    let path = dataset_path(tasks_dir);
    let checked_in = load_instances(&path)?;
    let fresh = instances_of(&built, &BTreeMap::new());
    if checked_in.len() != fresh.len() {
        return Err(stale(&path, "the number of tasks differs"));
    }
    for (a, b) in checked_in.iter().zip(&fresh) {
        if a.instance_id != b.instance_id
            || a.base_commit != b.base_commit
            || a.patch != b.patch
            || a.test_patch != b.test_patch
            || a.image != b.image
            || a.problem_statement != b.problem_statement
        {
            return Err(stale(
                &path,
                &format!("{} differs from its sources", b.instance_id),
            ));
        }
    }
    Ok(checked_in)
}

fn stale(path: &Path, what: &str) -> SweError {
    SweError::Invalid(format!(
        "{} is stale: {what}; regenerate it with `cargo run -p forge-swe --bin forge-swe-tasks -- generate`",
        path.display()
    ))
}

/// Regenerates the dataset: builds histories and images, runs each task's tests without and
/// with the gold patch in containers, and derives FAIL_TO_PASS (fail → pass) and PASS_TO_PASS
/// (pass → pass). Writes `bundled.jsonl` and returns the instances.
pub async fn generate(rt: &Runtime, tasks_dir: &Path) -> Result<Vec<TaskInstance>> {
    use crate::harness::ExecOptions;
    let (built, _tmp) = build_all(rt, tasks_dir).await?;
    let mut insts = instances_of(&built, &BTreeMap::new());
    let opts = ExecOptions {
        timeout: std::time::Duration::from_secs(300),
        ..Default::default()
    };
    for inst in &mut insts {
        let (f2p, p2p) = crate::validate::derive_tests(rt, inst, &opts).await?;
        if f2p.is_empty() {
            return Err(SweError::Invalid(format!(
                "{}: no test fails before and passes after the gold patch",
                inst.instance_id
            )));
        }
        (inst.fail_to_pass, inst.pass_to_pass) = (f2p, p2p);
    }
    crate::instance::save_instances_jsonl(&dataset_path(tasks_dir), &insts)?;
    Ok(insts)
}
