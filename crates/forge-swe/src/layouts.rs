//! The bundled tasks in the layouts and schemas of the datasets forge reads — SWE-bench as the
//! hub ships it, SWE-Gym, SWE-smith, R2E-Gym, SWE-rebench — with their images built offline from
//! the bundled images (no registry). What the tests of the real-data paths run on: the same
//! tasks must resolve, evaluate and train the same way from every source.
//!
//! The images follow the published layouts: the repository at `/testbed` with history only up to
//! the start (per-instance images) or with one branch per bug (SWE-smith); an environment at
//! `/opt/miniconda3/envs/testbed` that `source /opt/miniconda3/bin/activate; conda activate
//! testbed` activates and that only `/root/.bashrc` activates by itself (a conda stand-in: the
//! base image has no conda, and what matters to forge is that a `--norc` shell does not see the
//! environment); `python`/`pytest` of that environment differ from the system's; a git-ignored
//! build output ([`BUILD_OUTPUT`]) the way installed images hold compiled extensions.

use serde_json::{json, Value};

use crate::bundled::{self, BuiltRepo};
use crate::error::{Result, SweError};
use crate::instance::TaskInstance;
use crate::resolve::Source;
use forge_sandbox::{Runtime, SandboxSpec};

/// A git-ignored file every converted image holds, as an install's build output: setups that
/// run `git clean -x` delete it.
pub const BUILD_OUTPUT: &str = "_forge_build_output.txt";

/// The environment of the SWE-bench family, built into an image (bash, run as root).
const CONDA_LAYOUT: &str = r#"
python3 -m venv --without-pip --system-site-packages /opt/miniconda3/envs/testbed
mkdir -p /opt/miniconda3/bin
cat > /opt/miniconda3/bin/activate <<'EOF_ACTIVATE'
# conda stand-in: `conda activate NAME` puts /opt/miniconda3/envs/NAME/bin first on PATH.
conda() {
  case "$1" in
    activate)
      export CONDA_DEFAULT_ENV="${2:-base}" CONDA_PREFIX="/opt/miniconda3/envs/${2:-base}"
      export PATH="$CONDA_PREFIX/bin:$PATH" ;;
    *) echo "conda stand-in: only 'conda activate' is available" >&2; return 1 ;;
  esac
}
EOF_ACTIVATE
printf '#!/opt/miniconda3/envs/testbed/bin/python\nimport sys, pytest\nsys.exit(pytest.console_main())\n' > /opt/miniconda3/envs/testbed/bin/pytest
chmod +x /opt/miniconda3/envs/testbed/bin/pytest
echo 'source /opt/miniconda3/bin/activate && conda activate testbed' >> /root/.bashrc
"#;

/// The image name of a converted instance in `source`'s naming convention.
pub fn image_name(source: Source, inst: &TaskInstance) -> String {
    let id = &inst.instance_id;
    match source {
        Source::Swebench => crate::specs::official_image(id),
        Source::SweGym => crate::specs::sweb_eval_image("xingyaoww", "_s_", id),
        Source::SweRebench => crate::specs::sweb_eval_image("swerebench", "_1776_", id),
        Source::R2eGym => format!("namanjain12/{}_final:{}", inst.repo.rsplit('/').next().unwrap_or("repo"), &inst.base_commit[..12]),
        Source::SweSmith | Source::Forge => inst.image.clone().unwrap_or_default(),
    }
}

fn smith_repo(built: &BuiltRepo) -> String {
    format!("forge__{}.{}", built.source.name, &built.head[..8])
}

/// Runs `script` in a container of `from` and commits it as `tag`.
async fn derive_image(rt: &Runtime, from: &str, tag: &str, script: &str) -> Result<()> {
    let mut sb = rt.create(&SandboxSpec::new(from).label("forge.swe.build", "layout")).await?;
    let res = async {
        let o = sb.exec(&["bash", "-c", &format!("set -euo pipefail\n{script}\nrm -rf /tmp/.forge")], Some(std::time::Duration::from_secs(300))).await?;
        if o.exit_code != Some(0) {
            return Err(SweError::Invalid(format!("building {tag} failed (exit {:?}):\n{}", o.exit_code, o.output)));
        }
        bundled::commit(rt, sb.id(), tag, "forge: a bundled task in a dataset's layout", Some("WORKDIR /testbed")).await
    }
    .await;
    let _ = sb.remove().await;
    res
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// History only up to `start`, as per-instance images have it.
fn only_history_to(start: &str) -> String {
    format!(
        "cd /testbed\ngit checkout -qf {start}\n\
         git for-each-ref --format='%(refname)' | while read -r r; do git update-ref -d \"$r\"; done\n\
         git checkout -q -B main\ngit reflog expire --expire=now --all\ngit gc -q --prune=now\n"
    )
}

fn build_output() -> String {
    format!("cd /testbed\necho 'built by the install' > {BUILD_OUTPUT}\necho {BUILD_OUTPUT} >> .git/info/exclude\n")
}

/// Converts the bundled `instances` (of the `built` projects, whose images exist) into
/// `source`'s schema and builds their images (when missing). Returns the records as the
/// dataset would ship them.
pub async fn convert(rt: &Runtime, built: &[BuiltRepo], instances: &[TaskInstance], source: Source) -> Result<Vec<Value>> {
    let mut records = Vec::new();
    for inst in instances {
        let repo = built
            .iter()
            .find(|b| b.tasks.iter().any(|t| t.instance_id == inst.instance_id))
            .ok_or_else(|| SweError::Invalid(format!("{} is not a task of the built projects", inst.instance_id)))?;
        let from = inst.image.clone().ok_or_else(|| SweError::Invalid(format!("{} names no image", inst.instance_id)))?;
        let base = &inst.base_commit;
        let tests_passing: Vec<&String> = inst.fail_to_pass.iter().chain(&inst.pass_to_pass).collect();
        let record = match source {
            Source::Forge => serde_json::to_value(inst).expect("instances serialize"),
            Source::Swebench | Source::SweGym | Source::SweRebench => {
                let tag = image_name(source, inst);
                if rt.image_info(&tag).await.is_err() {
                    // The official images' HEAD is a commit on top of the base recording the install.
                    let script = format!(
                        "{}{CONDA_LAYOUT}{}git -c user.name=SWE-bench -c user.email=setup@swebench.config commit --allow-empty -qam SWE-bench\n",
                        only_history_to(base),
                        build_output()
                    );
                    derive_image(rt, &from, &tag, &script).await?;
                }
                let mut r = json!({
                    "repo": inst.repo, "instance_id": inst.instance_id, "base_commit": base,
                    "patch": inst.patch, "test_patch": inst.test_patch, "problem_statement": inst.problem_statement,
                    "hints_text": inst.hints_text, "created_at": inst.created_at, "version": inst.version,
                    "environment_setup_commit": inst.environment_setup_commit,
                });
                match source {
                    // The hub's form: test lists as JSON-encoded strings.
                    Source::Swebench => {
                        r["FAIL_TO_PASS"] = Value::String(serde_json::to_string(&inst.fail_to_pass).unwrap());
                        r["PASS_TO_PASS"] = Value::String(serde_json::to_string(&inst.pass_to_pass).unwrap());
                    }
                    _ => {
                        r["FAIL_TO_PASS"] = json!(inst.fail_to_pass);
                        r["PASS_TO_PASS"] = json!(inst.pass_to_pass);
                    }
                }
                if source == Source::SweRebench {
                    r["image_name"] = Value::String(tag.trim_end_matches(":latest").to_string());
                    r["install_config"] = json!({
                        "python": "3.11", "install": "", "log_parser": "parse_log_pytest",
                        "test_cmd": inst.test_cmd.clone().unwrap_or_else(|| bundled::TEST_CMD.into()),
                    });
                }
                r
            }
            Source::SweSmith => {
                // One image per repository; each bug a branch named by the instance id: the bug
                // with the tests, then a commit that removes the tests that fail.
                let tag = format!("jyangballin/swesmith.x86_64.{}:latest", smith_repo(repo).replace("__", "_1776_").to_ascii_lowercase());
                let test_files = crate::instance::patch_files(&inst.test_patch);
                let files: Vec<String> = test_files.iter().map(|f| q(f)).collect();
                let mut branch = format!(
                    "cd /testbed\ngit checkout -qf -B {id} {base}\ngit apply - <<'EOF_TEST_PATCH'\n{tp}\nEOF_TEST_PATCH\n\
                     git add -A && git -c user.name=swesmith -c user.email=s@s commit -qm 'Bug Patch'\n\
                     git rm -q -- {files} && git -c user.name=swesmith -c user.email=s@s commit -qm 'Remove F2P Tests'\n",
                    id = q(&inst.instance_id),
                    tp = inst.test_patch.trim_end_matches('\n'),
                    files = files.join(" "),
                );
                let exists = rt.image_info(&tag).await.is_ok();
                let from = if exists { tag.clone() } else { from.clone() };
                if !exists {
                    branch = format!("{CONDA_LAYOUT}{}{branch}git checkout -q main\n", build_output());
                }
                let check = format!("cd /testbed && git rev-parse -q --verify refs/heads/{}", q(&inst.instance_id));
                let has_branch = exists && {
                    let mut sb = rt.create(&SandboxSpec::new(&tag).label("forge.swe.build", "layout")).await?;
                    let o = sb.exec(&["bash", "-c", &check], Some(std::time::Duration::from_secs(60))).await;
                    let _ = sb.remove().await;
                    o?.exit_code == Some(0)
                };
                if !has_branch {
                    derive_image(rt, &from, &tag, &branch).await?;
                }
                json!({
                    "instance_id": inst.instance_id,
                    "repo": format!("swesmith/{}", smith_repo(repo)),
                    "patch": crate::resolve::reverse_patch(&inst.patch),
                    "FAIL_TO_PASS": inst.fail_to_pass, "PASS_TO_PASS": inst.pass_to_pass,
                    "image_name": tag.trim_end_matches(":latest"),
                    "problem_statement": inst.problem_statement,
                })
            }
            Source::R2eGym => {
                // The task's tests (test patch applied) in `r2e_tests/` beside a runner; both
                // outside git's view, as the agent's setup moves the tests out of the repository.
                let tag = image_name(source, inst);
                let test_files = crate::instance::patch_files(&inst.test_patch);
                if rt.image_info(&tag).await.is_err() {
                    let mut script = only_history_to(base);
                    script.push_str(&format!(
                        "git apply - <<'EOF_TEST_PATCH'\n{}\nEOF_TEST_PATCH\nmkdir -p r2e_tests\n",
                        inst.test_patch.trim_end_matches('\n')
                    ));
                    for f in &test_files {
                        let name = f.rsplit('/').next().unwrap_or(f);
                        script.push_str(&format!("cp -- {} r2e_tests/{}\n", q(f), q(name)));
                    }
                    script.push_str(&format!(
                        "git checkout -q -- . && git clean -fdq -e r2e_tests\n\
                         printf '#!/bin/bash\\npython3 -m pytest -rA -p no:cacheprovider r2e_tests\\n' > run_tests.sh && chmod +x run_tests.sh\n\
                         printf 'r2e_tests\\nrun_tests.sh\\n' >> .git/info/exclude\n{}",
                        build_output()
                    ));
                    derive_image(rt, &from, &tag, &script).await?;
                }
                let r2e_id = |t: &str| {
                    let (file, rest) = t.split_once("::").unwrap_or((t, ""));
                    let name = file.rsplit('/').next().unwrap_or(file);
                    if rest.is_empty() { format!("r2e_tests/{name}") } else { format!("r2e_tests/{name}::{rest}") }
                };
                // R2E-Gym runs only the task's own test files.
                let expected: serde_json::Map<String, Value> = tests_passing
                    .iter()
                    .filter(|t| test_files.iter().any(|f| t.split("::").next() == Some(f.as_str())))
                    .map(|t| (r2e_id(t), Value::String("PASSED".into())))
                    .collect();
                json!({
                    "repo_name": inst.repo, "docker_image": tag, "commit_hash": base,
                    "problem_statement": inst.problem_statement,
                    "expected_output_json": serde_json::to_string(&expected).unwrap(),
                    // the gold fix, for `--predictions gold` (R2E-Gym ships the commit's content instead)
                    "patch": inst.patch,
                })
            }
        };
        records.push(record);
    }
    Ok(records)
}

/// The specifications forge/* repositories need in SWE-bench's hub form (the official table
/// knows only SWE-bench's repositories): what a user with SWE-bench-style tasks of their own
/// gives through `FORGE_SWEBENCH_SPECS`.
pub fn bundled_specs(instances: &[TaskInstance]) -> Value {
    let mut specs = serde_json::Map::new();
    for inst in instances {
        let test_cmd = inst.test_cmd.clone().unwrap_or_else(|| bundled::TEST_CMD.into());
        specs
            .entry(inst.repo.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(inst.version.clone(), json!({"python": "3.11", "test_cmd": test_cmd}));
    }
    Value::Object(specs)
}
