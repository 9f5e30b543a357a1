//! Walking a repository's history for task candidates: first-parent commits (merges included,
//! diffed against their first parent) that change Python source AND tests. Everything else is
//! recorded with the reason it was passed over.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bundled::is_test_file;
use crate::error::{Result, SweError};

/// Read-only git access to one repository (a work tree or a bare git directory).
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
}

impl Git {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Git { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs git with `args`; stdout on success, an error with stderr otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| SweError::Invalid(format!("cannot run `git` ({e}); install git to mine tasks")))?;
        if !out.status.success() {
            return Err(SweError::Invalid(format!(
                "git {} failed in {}: {}",
                args.join(" "),
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The bytes of `path` at `commit`, or `None` when it does not exist there.
    pub fn show(&self, commit: &str, path: &str) -> Option<String> {
        self.run(&["show", &format!("{commit}:{path}")]).ok()
    }
}

/// One first-parent commit of the walk.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub sha: String,
    /// The first parent (the state before the change); `None` for a root commit.
    pub parent: Option<String>,
    /// The merged branch's tip for a merge commit.
    pub merged: Option<String>,
    /// Author date, ISO 8601 (`2024-06-11T10:00:00+00:00`).
    pub date: String,
    pub subject: String,
    pub body: String,
}

/// How a commit's changed files split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSplit {
    /// Test files (the test patch).
    pub tests: Vec<String>,
    /// Non-test Python files.
    pub source: Vec<String>,
    /// Everything else (docs, config, data): part of the gold patch, never a reason to mine.
    pub other: Vec<String>,
}

impl ChangeSplit {
    pub fn of(files: &[String]) -> Self {
        let mut split = ChangeSplit::default();
        for f in files {
            if is_test_file(f) {
                split.tests.push(f.clone());
            } else if f.ends_with(".py") || f.ends_with(".pyx") {
                split.source.push(f.clone());
            } else {
                split.other.push(f.clone());
            }
        }
        split
    }

    /// Why the commit is no candidate, or `None` when it changes both source and tests.
    pub fn pass_over_reason(&self) -> Option<&'static str> {
        match (self.source.is_empty(), self.tests.is_empty()) {
            (false, false) => None,
            (true, true) => Some("no Python source and no test changed (docs, config or data only)"),
            (true, false) => Some("only tests changed (no Python source)"),
            (false, true) => Some("no test changed (source only: nothing can check the fix)"),
        }
    }
}

/// The first-parent commits of `rev`, oldest first, authored on or after `since` (git's date
/// syntax) when given.
pub fn first_parent_commits(git: &Git, rev: &str, since: Option<&str>) -> Result<Vec<CommitInfo>> {
    // Records: NUL-separated fields, 0x1e between commits; bodies may hold anything else.
    let mut args = vec![
        "log".to_string(),
        "--first-parent".into(),
        "--reverse".into(),
        "--format=%H%x00%P%x00%aI%x00%s%x00%b%x1e".into(),
    ];
    if let Some(s) = since {
        args.push(format!("--since={s}"));
    }
    args.push(rev.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = git.run(&args)?;
    let mut commits = Vec::new();
    for rec in out.split('\u{1e}') {
        let rec = rec.trim_start_matches('\n');
        if rec.is_empty() {
            continue;
        }
        let f: Vec<&str> = rec.splitn(5, '\0').collect();
        if f.len() < 5 {
            continue;
        }
        let parents: Vec<&str> = f[1].split_whitespace().collect();
        commits.push(CommitInfo {
            sha: f[0].to_string(),
            parent: parents.first().map(|s| s.to_string()),
            merged: parents.get(1).map(|s| s.to_string()),
            date: f[2].to_string(),
            subject: f[3].to_string(),
            body: f[4].trim().to_string(),
        });
    }
    Ok(commits)
}

/// Files a commit changes against its first parent (renames as delete + add).
pub fn changed_files(git: &Git, c: &CommitInfo) -> Result<Vec<String>> {
    let parent = c.parent.as_deref().expect("changed_files of a root commit");
    let out = git.run(&["diff", "--no-renames", "--name-only", "-z", parent, &c.sha])?;
    Ok(out.split('\0').filter(|s| !s.is_empty()).map(str::to_string).collect())
}

/// The diff of `files` from the commit's first parent to the commit, as `git apply` takes it
/// (binary files included in git's binary form).
pub fn diff_of(git: &Git, c: &CommitInfo, files: &[String]) -> Result<String> {
    if files.is_empty() {
        return Ok(String::new());
    }
    let parent = c.parent.as_deref().expect("diff of a root commit");
    let mut args = vec!["diff", "--no-color", "--no-ext-diff", "--no-renames", "--binary", parent, &c.sha, "--"];
    args.extend(files.iter().map(String::as_str));
    git.run(&args)
}

/// The problem statement a mined task starts with: the commit's message, and for a merge the
/// merged commits' messages too (a pull request's title and body and its commits). Issue
/// references (`#123`) are kept as written; they go to `hints_text` as well.
pub fn statement_of(git: &Git, c: &CommitInfo) -> Result<(String, String)> {
    let mut text = c.subject.clone();
    if !c.body.is_empty() {
        text.push_str("\n\n");
        text.push_str(&c.body);
    }
    if let (Some(parent), Some(merged)) = (&c.parent, &c.merged) {
        let range = format!("{parent}..{merged}");
        let msgs = git.run(&["log", "--format=%B%x1e", &range])?;
        for m in msgs.split('\u{1e}').map(str::trim).filter(|m| !m.is_empty()) {
            text.push_str("\n\n");
            text.push_str(m);
        }
    }
    let refs = issue_refs(&text);
    let hints = if refs.is_empty() {
        String::new()
    } else {
        format!("The change references {}.", refs.join(", "))
    };
    Ok((text, hints))
}

/// `#123`-style issue references, in order, deduplicated.
pub fn issue_refs(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"(?:^|[\s(\[])(#\d+)\b").expect("valid regex");
    let mut out: Vec<String> = Vec::new();
    for c in re.captures_iter(text) {
        let r = c[1].to_string();
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_the_reason_a_commit_is_passed_over() {
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = ChangeSplit::of(&files(&["pkg/a.py", "tests/test_a.py", "README.md"]));
        assert_eq!(s.source, vec!["pkg/a.py"]);
        assert_eq!(s.tests, vec!["tests/test_a.py"]);
        assert_eq!(s.other, vec!["README.md"]);
        assert_eq!(s.pass_over_reason(), None);
        assert!(ChangeSplit::of(&files(&["docs/x.rst"])).pass_over_reason().unwrap().contains("docs"));
        assert!(ChangeSplit::of(&files(&["tests/test_a.py"])).pass_over_reason().unwrap().contains("only tests"));
        assert!(ChangeSplit::of(&files(&["pkg/a.py"])).pass_over_reason().unwrap().contains("no test"));
        // test layouts beyond tests/: test/, testing/, *_test.py, conftest.py
        let s = ChangeSplit::of(&files(&["src/p/test/x.py", "p/b_test.py", "conftest.py", "p/testing/util.py", "p/contest.py"]));
        assert_eq!(s.tests.len(), 4, "{s:?}");
        assert_eq!(s.source, vec!["p/contest.py"]);
    }

    #[test]
    fn issue_references_are_found_once() {
        assert_eq!(issue_refs("Fix #12 (see #3); closes #12. a#4 no"), vec!["#12", "#3"]);
        assert!(issue_refs("nothing here").is_empty());
    }
}
