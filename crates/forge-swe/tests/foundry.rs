//! The Foundry on histories built here from bundled projects: commits that change only docs,
//! only tests, only config, a refactor with no behaviour change, the real fixes (one of them
//! through a merge). The miner must find exactly the fixes, with the hand-written tasks'
//! patches and FAIL_TO_PASS / PASS_TO_PASS, every task eval-ready by `forge tasks validate`'s
//! definition, and the pruning must put the tasks onto one image.
//!
//! Real Docker, real pytest; under `CI=true` a missing engine or base image FAILS the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use forge_sandbox::testing::require_docker;
use forge_swe::bundled::{self, BuiltRepo};
use forge_swe::foundry::{self, MineOptions};
use forge_swe::harness::ExecOptions;
use forge_swe::TaskInstance;

fn git(dir: &Path, args: &[&str], day: u64) -> String {
    let date = format!("{} +0000", 1_710_000_000 + 86_400 * day);
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The plain history of a bundled project (commit k = task k's fix) and its hand-written tasks.
fn plain(project: &str, tmp: &Path) -> (BuiltRepo, Vec<TaskInstance>) {
    let tasks_dir = bundled::default_tasks_dir();
    let src = bundled::discover(&tasks_dir).unwrap().into_iter().find(|r| r.name == project).unwrap();
    let built = bundled::build_repo(&src, &tmp.join(format!("{project}-plain"))).unwrap();
    let expected: Vec<TaskInstance> = forge_swe::load_instances(&bundled::dataset_path(&tasks_dir))
        .unwrap()
        .into_iter()
        .filter(|t| t.repo == format!("forge/{project}"))
        .collect();
    assert_eq!(expected.len(), 3);
    (built, expected)
}

/// A history around the project's three fixes: import, docs only, fix 1, tests only, config
/// only (a version bump: a second environment), fix 2, fix 3 merged from a branch, and a refactor
/// that changes source and tests without changing behaviour.
fn mixed_history(project: &str, plain: &BuiltRepo, tmp: &Path) -> PathBuf {
    let dir = tmp.join(format!("{project}-mixed"));
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"], 0);
    git(&dir, &["fetch", "-q", plain.workdir.to_str().unwrap(), "main"], 0);
    let plain_commits: Vec<String> = git(&dir, &["rev-list", "--reverse", "FETCH_HEAD"], 0).lines().map(str::to_string).collect();
    assert_eq!(plain_commits.len(), 4);
    // Commit k's change on top of whatever the mixed history has.
    let take = |k: usize| {
        if k == 0 {
            git(&dir, &["checkout", &plain_commits[0], "--", "."], 0);
            return;
        }
        let diff = git(&dir, &["diff", "--binary", &plain_commits[k - 1], &plain_commits[k]], 0);
        let patch = tmp.join(format!("{project}-{k}.diff"));
        std::fs::write(&patch, format!("{diff}\n")).unwrap();
        git(&dir, &["apply", patch.to_str().unwrap()], 0);
    };
    let commit = |msg: &str, day: u64| {
        git(&dir, &["add", "-A"], day);
        git(&dir, &["commit", "-q", "--no-gpg-sign", "-m", msg], day);
    };
    let append = |file: &str, text: &str| {
        let path = dir.join(file);
        let mut s = std::fs::read_to_string(&path).unwrap_or_default();
        s.push_str(text);
        std::fs::write(path, s).unwrap();
    };
    take(0);
    commit(&format!("Import {project}"), 1);
    append("README.md", "\nSee the docstrings for details.\n");
    commit("Docs: point to the docstrings", 2);
    take(1);
    commit("Fix the first bug\n\nCloses #11.", 3);
    std::fs::write(dir.join("tests/test_smoke.py"), format!("import {project}\n\n\ndef test_imports():\n    assert {project}.__name__ == \"{project}\"\n")).unwrap();
    commit("Tests: a smoke test", 4);
    let pyproject = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
    let bumped = pyproject.replacen("version = \"", "version = \"9.", 1);
    assert_ne!(bumped, pyproject);
    std::fs::write(dir.join("pyproject.toml"), bumped).unwrap();
    commit("Release: bump the version", 5);
    take(2);
    commit("Fix the second bug", 6);
    git(&dir, &["checkout", "-q", "-b", "topic"], 7);
    take(3);
    commit("Fix the third bug", 7);
    git(&dir, &["checkout", "-q", "main"], 8);
    git(&dir, &["merge", "-q", "--no-ff", "--no-gpg-sign", "-m", "Merge pull request #42 from dev/topic", "topic"], 8);
    let source = plain.tasks[0].patch.lines().find_map(|l| l.strip_prefix("+++ b/")).unwrap().to_string();
    append(&source, "\n\n# Kept for readers of older releases.\n_REFACTORED = True\n");
    std::fs::write(dir.join("tests/test_refactor.py"), format!("import {project}\n\n\ndef test_still_imports():\n    assert {project} is not None\n")).unwrap();
    commit("Refactor: no behaviour change", 9);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mines_exactly_the_fixes_of_bundled_histories() {
    let test = "foundry-bundled";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tmp = tempfile::tempdir().unwrap();
    for project in ["calutil", "semverkit"] {
        let (plain, expected) = plain(project, tmp.path());
        let repo = mixed_history(project, &plain, tmp.path());
        // Images of an earlier run would be reused (their labels say how they were built):
        // removed, so that this run builds its environments.
        remove_images(&rt, &format!("forge-foundry/local__{project}-mixed")).await;
        let opts = MineOptions { repo: repo.display().to_string(), workers: 3, ..Default::default() };
        let (tasks, report) = foundry::mine(&rt, &opts).await.unwrap();
        let verdicts: Vec<(&str, &str)> = report.commits.iter().map(|v| (v.subject.as_str(), v.verdict.as_str())).collect();
        let import = format!("Import {project}");
        assert_eq!(
            verdicts,
            vec![
                (import.as_str(), "passed_over"),
                ("Docs: point to the docstrings", "passed_over"),
                ("Fix the first bug", "task"),
                ("Tests: a smoke test", "passed_over"),
                ("Release: bump the version", "passed_over"),
                ("Fix the second bug", "task"),
                ("Merge pull request #42 from dev/topic", "task"),
                ("Refactor: no behaviour change", "dropped"),
            ],
            "{project}: {:#?}",
            report.commits
        );
        let reason = |subject: &str| report.commits.iter().find(|v| v.subject == subject).unwrap().reason.clone();
        assert!(reason("Docs: point to the docstrings").contains("docs"));
        assert!(reason("Tests: a smoke test").contains("only tests"));
        assert!(reason("Refactor: no behaviour change").contains("no FAIL_TO_PASS"), "{}", reason("Refactor: no behaviour change"));
        assert_eq!((report.commits_scanned, report.candidates, report.tasks), (8, 4, 3));
        // The hand-written tasks, found again: same patches, same tests.
        assert_eq!(tasks.len(), 3);
        for (got, want) in tasks.iter().zip(&expected) {
            assert_eq!(got.patch, want.patch, "{}", want.instance_id);
            assert_eq!(got.test_patch, want.test_patch, "{}", want.instance_id);
            assert_eq!(got.fail_to_pass, want.fail_to_pass, "{}", want.instance_id);
            assert_eq!(got.pass_to_pass, want.pass_to_pass, "{}", want.instance_id);
            assert!(got.instance_id.starts_with(&format!("local__{project}-mixed-")), "{}", got.instance_id);
        }
        assert!(tasks[0].problem_statement.starts_with("Fix the first bug") && tasks[0].hints_text.contains("#11"));
        assert!(tasks[2].problem_statement.contains("Merge pull request #42") && tasks[2].problem_statement.contains("Fix the third bug"));
        // Two environments (the version bump changed pyproject.toml), one image after pruning.
        assert_eq!((report.images.images_before, report.images.images_after), (2, 1), "{:#?}", report.images);
        assert_eq!(report.images.moves.len(), 1);
        assert!(report.images.bytes_per_task < report.images.baseline_bytes_per_task, "{:#?}", report.images);
        assert!(tasks.iter().all(|t| t.image == tasks[0].image));
        // A project that declares no dependency runs on the base image's Python.
        let built: Vec<&forge_swe::foundry::env::Attempt> = report.commits.iter().flat_map(|v| &v.env_attempts).collect();
        assert_eq!(built.len(), 2, "one build per environment: {built:#?}");
        assert!(built.iter().all(|a| a.ok && a.strategy == "system-python"), "{built:#?}");
        // Independently: every mined task is eval-ready by `forge tasks validate`'s definition.
        let verdicts = forge_swe::validate_tasks(&rt, &tasks, &ExecOptions::default(), 2).await;
        for v in &verdicts {
            assert!(v.ok, "{}: {:?}", v.instance_id, v.problems);
        }
    }
}

async fn remove_images(rt: &forge_sandbox::Runtime, repository: &str) {
    let filters = std::collections::HashMap::from([("reference".to_string(), vec![format!("{repository}:*")])]);
    let opts = bollard::query_parameters::ListImagesOptions { filters: Some(filters), ..Default::default() };
    for img in rt.docker().list_images(Some(opts)).await.unwrap() {
        for tag in img.repo_tags {
            rt.docker().remove_image(&tag, None::<bollard::query_parameters::RemoveImageOptions>, None).await.unwrap();
        }
    }
}
