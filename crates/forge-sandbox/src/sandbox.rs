//! One sandbox: a running container, its persistent shell, one-shot execs and file transfer.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    DownloadFromContainerOptions, RestartContainerOptions, UploadToContainerOptions,
};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant as TokioInstant;

use crate::error::{Result, SandboxError};
use crate::output::CappedOutput;
use crate::runtime::{api, nonce, Runtime, SandboxSpec};

/// The result of running a command.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    /// stdout and stderr merged in order, capped (head + tail with a marker).
    pub output: String,
    /// Exit code of the command; `None` when it never finished.
    pub exit_code: Option<i64>,
    /// The command ran past its timeout and was killed.
    pub timed_out: bool,
}

type OutStream =
    Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Makes a `Send` value `Sync` by allowing access only through `&mut` (like std's unstable
/// `Exclusive`): sound because a shared reference gives no access at all. This lets futures that
/// borrow a [`Sandbox`] be `Send`, so sandboxes can be driven from spawned tokio tasks.
struct Exclusive<T>(T);
// SAFETY: no method gives access to the inner value through `&self`.
unsafe impl<T: Send> Sync for Exclusive<T> {}
impl<T> Exclusive<T> {
    fn get_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The persistent bash of a sandbox, driven over one attached `docker exec`.
struct Shell {
    exec_id: String,
    input: Exclusive<Pin<Box<dyn AsyncWrite + Send>>>,
    output: Exclusive<OutStream>,
    /// Pid of bash inside the container.
    pid: u32,
    /// Bytes read from the stream but not consumed yet.
    pending: Vec<u8>,
}

enum Read {
    Found,
    Timeout,
    Eof,
    Failed(String),
}

impl Shell {
    /// Reads until `marker`; bytes before it go to `sink`; the marker is consumed.
    async fn read_until(
        &mut self,
        marker: &[u8],
        deadline: TokioInstant,
        sink: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Read {
        loop {
            if let Some(i) = find(&self.pending, marker) {
                sink(&self.pending[..i]);
                self.pending.drain(..i + marker.len());
                return Read::Found;
            }
            // Keep what could be the start of a marker split across chunks.
            let keep = marker.len().saturating_sub(1).min(self.pending.len());
            let flush = self.pending.len() - keep;
            if flush > 0 {
                sink(&self.pending[..flush]);
                self.pending.drain(..flush);
            }
            match tokio::time::timeout_at(deadline, self.output.get_mut().next()).await {
                Err(_) => return Read::Timeout,
                Ok(None) => {
                    sink(&self.pending);
                    self.pending.clear();
                    return Read::Eof;
                }
                Ok(Some(Err(e))) => return Read::Failed(e.to_string()),
                Ok(Some(Ok(chunk))) => match chunk {
                    LogOutput::StdOut { message }
                    | LogOutput::StdErr { message }
                    | LogOutput::Console { message } => self.pending.extend_from_slice(&message),
                    LogOutput::StdIn { .. } => {}
                },
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Kills every descendant of the pid given as $1 (the shell), repeatedly, stopping them first so
/// that a fork bomb cannot outrun it; processes orphaned on the way (reparented to PID 1, e.g. a
/// fork bomb's children whose parent was killed first) are killed with them — every child of
/// PID 1 except the container's main process (its oldest child). Pure bash + /proc: needs no
/// procps in the image.
const KILL_TREE: &str = r#"
root=$1
# The shell traps USR1 during a command and returns from it: the rest of the command list is
# skipped once the running process is killed (like Ctrl-C at a terminal).
kill -USR1 "$root" 2>/dev/null
# builtins only from here: under a saturated pids limit every fork would stall in retries
main=
for round in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  unset kids; declare -A kids
  for d in /proc/[0-9]*; do
    read -r l < "$d/stat" 2>/dev/null || continue
    r=${l##*) }
    set -- $r
    kids[$2]+=" ${d#/proc/}"
  done
  found=(); queue=("$root")
  if [ -z "$main" ]; then
    for c in ${kids[1]}; do
      if [ -z "$main" ] || [ "$c" -lt "$main" ]; then main=$c; fi
    done
  fi
  for c in ${kids[1]}; do
    if [ "$c" != "$main" ] && [ "$c" != "$$" ]; then found+=("$c"); queue+=("$c"); fi
  done
  while ((${#queue[@]})); do
    q=${queue[-1]}; unset 'queue[-1]'
    for c in ${kids[$q]}; do found+=("$c"); queue+=("$c"); done
  done
  ((${#found[@]})) || exit 0
  kill -STOP "${found[@]}" 2>/dev/null
  kill -KILL "${found[@]}" 2>/dev/null
  kill -CONT "${found[@]}" 2>/dev/null
done
"#;

/// Kills every process of the container except PID 1 (docker-init), the container's main process
/// (its oldest child: stopping it would stop the container) and this script itself.
const KILL_ALL: &str = r#"
main=
for c in $(cat /proc/1/task/*/children 2>/dev/null); do
  if [ -z "$main" ] || [ "$c" -lt "$main" ]; then main=$c; fi
done
for round in 1 2 3; do
  victims=()
  for d in /proc/[0-9]*; do
    n=${d#/proc/}
    [ "$n" = 1 ] || [ "$n" = "$main" ] || [ "$n" = "$$" ] || victims+=("$n")
  done
  ((${#victims[@]})) || break
  kill -STOP "${victims[@]}" 2>/dev/null; kill -KILL "${victims[@]}" 2>/dev/null
done
exit 0
"#;

const SHELL_ENV: &[&str] = &[
    "PS1=",
    "PS2=",
    "TERM=dumb",
    "PAGER=cat",
    "GIT_PAGER=cat",
    "PYTHONUNBUFFERED=1",
    "DEBIAN_FRONTEND=noninteractive",
];

/// State of the shell survives a shell restart: exported variables and the working directory
/// are saved (by bash builtins, no fork) after every command.
const STATE_DIR: &str = "/tmp/.forge";

/// A running sandbox container. Remove it with [`Sandbox::remove`]; if it is dropped instead
/// (a panic, an early return), the container is force-removed from a helper thread.
pub struct Sandbox {
    rt: Runtime,
    id: String,
    spec: SandboxSpec,
    shell: Option<Shell>,
    pub(crate) history: HashMap<String, Vec<String>>,
    removed: bool,
    /// The container's writable layer on this host, when the engine is local and it can be read
    /// (measuring it directly takes milliseconds; the engine's `size` inspection walks the whole
    /// image and takes seconds on some drivers).
    upper_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("image", &self.spec.image)
            .finish()
    }
}

impl Sandbox {
    pub(crate) fn adopt(rt: Runtime, id: String, spec: SandboxSpec) -> Self {
        Sandbox {
            rt,
            id,
            spec,
            shell: None,
            history: HashMap::new(),
            removed: false,
            upper_dir: None,
        }
    }

    /// Container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn spec(&self) -> &SandboxSpec {
        &self.spec
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Removes the container. Idempotent.
    pub async fn remove(&mut self) -> Result<()> {
        self.shell = None;
        if self.removed {
            return Ok(());
        }
        self.rt.remove_container(&self.id).await?;
        self.removed = true;
        Ok(())
    }

    /// A clear error when the container is not running any more, otherwise `fallback`. The engine
    /// reports a killed container as running for a moment after its processes died, so a
    /// "running" answer is checked again for up to a second.
    async fn gone_or(&self, during: &str, fallback: SandboxError) -> SandboxError {
        let mut state = self.state().await;
        for _ in 0..10 {
            if !matches!(&state, Ok(Some((s, _))) if s == "running") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            state = self.state().await;
        }
        match state {
            Ok(Some((state, oom_killed))) if state != "running" => SandboxError::ContainerGone {
                container: self.id.clone(),
                state,
                during: during.into(),
                oom_killed,
            },
            Ok(None) => SandboxError::ContainerGone {
                container: self.id.clone(),
                state: "removed".into(),
                during: during.into(),
                oom_killed: false,
            },
            _ => fallback,
        }
    }

    /// `Some(status)` ("running", "exited", ...) or `None` if the container no longer exists.
    pub async fn container_state(&self) -> Result<Option<String>> {
        Ok(self.state().await?.map(|(status, _)| status))
    }

    /// The container's status and whether the OOM killer ended it; `None` if it is gone.
    async fn state(&self) -> Result<Option<(String, bool)>> {
        match api(
            "inspect container",
            self.rt.docker().inspect_container(&self.id, None),
        )
        .await
        {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                Ok(Some((
                    state.status.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
                    state.oom_killed.unwrap_or(false),
                )))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Finds the container's writable layer on this host (overlay drivers name it `UpperDir`), for
    /// [`Sandbox::written_bytes`]; without one that can be read, the engine measures it.
    pub(crate) async fn locate_upper_dir(&mut self) -> Result<()> {
        if !self.rt.engine().is_local() {
            return Ok(());
        }
        let c = api("inspect container", self.rt.docker().inspect_container(&self.id, None)).await?;
        self.upper_dir = c
            .graph_driver
            .and_then(|g| g.data.get("UpperDir").cloned())
            .map(std::path::PathBuf::from)
            .filter(|dir| std::fs::read_dir(dir).is_ok());
        Ok(())
    }

    /// Bytes the container has written: the disk blocks of its writable layer (as `du`), or where
    /// that layer cannot be read here, the engine's `SizeRw` (as `docker ps --size`).
    pub async fn written_bytes(&self) -> Result<u64> {
        if let Some(dir) = self.upper_dir.clone() {
            if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || disk_usage(&dir)).await {
                return Ok(bytes);
            }
        }
        let opts = bollard::query_parameters::InspectContainerOptions { size: true };
        let c = match api("inspect container size", self.rt.docker().inspect_container(&self.id, Some(opts))).await {
            Ok(c) => c,
            Err(e) => return Err(self.gone_or("measuring its writes", e).await),
        };
        Ok(c.size_rw.unwrap_or(0).max(0) as u64)
    }

    /// Fails with [`SandboxError::StorageExceeded`] when the container has written more than
    /// `Limits::storage_bytes` (nothing to do without a limit). [`Sandbox::call`] runs it after
    /// every tool call that can write.
    pub async fn check_storage(&self) -> Result<()> {
        let Some(limit) = self.spec.limits.storage_bytes else { return Ok(()) };
        let used = self.written_bytes().await?;
        if used > limit {
            return Err(SandboxError::StorageExceeded { container: self.id.clone(), used_bytes: used, limit_bytes: limit });
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------------
    // one-shot exec

    /// Runs `cmd` in a fresh `docker exec` (not the persistent shell), output merged and capped.
    /// With a timeout the command runs under coreutils `timeout -s KILL` (its process group is
    /// killed on expiry) and the host stops waiting 5 s later in any case.
    pub async fn exec(&self, cmd: &[&str], timeout: Option<Duration>) -> Result<ExecOutput> {
        self.exec_in(cmd, None, timeout).await
    }

    pub(crate) async fn exec_in(
        &self,
        cmd: &[&str],
        workdir: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(t) = timeout {
            argv.extend(["timeout".into(), "-s".into(), "KILL".into()]);
            argv.push(format!("{:.3}", t.as_secs_f64()));
        }
        argv.extend(cmd.iter().map(|s| s.to_string()));
        let opts = CreateExecOptions::<String> {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv),
            working_dir: workdir.map(str::to_string),
            ..Default::default()
        };
        let exec = match api("create exec", self.rt.docker().create_exec(&self.id, opts)).await {
            Ok(e) => e,
            Err(e) => return Err(self.gone_or("creating an exec", e).await),
        };
        let started = Instant::now();
        let res = match api(
            "start exec",
            self.rt
                .docker()
                .start_exec(&exec.id, None::<StartExecOptions>),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.gone_or("starting an exec", e).await),
        };
        let StartExecResults::Attached { mut output, .. } = res else {
            unreachable!("start_exec without detach attaches");
        };
        let mut cap = CappedOutput::new(self.spec.max_output_bytes);
        let deadline = timeout.map(|t| TokioInstant::now() + t + Duration::from_secs(5));
        let mut host_timeout = false;
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, output.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        host_timeout = true;
                        break;
                    }
                },
                None => output.next().await,
            };
            match next {
                None => break,
                Some(Ok(
                    LogOutput::StdOut { message }
                    | LogOutput::StdErr { message }
                    | LogOutput::Console { message },
                )) => cap.push(&message),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let err = SandboxError::docker("read exec output", e);
                    return Err(self.gone_or("reading exec output", err).await);
                }
            }
        }
        if host_timeout {
            return Ok(ExecOutput {
                output: cap.finish(),
                exit_code: None,
                timed_out: true,
            });
        }
        let info = api("inspect exec", self.rt.docker().inspect_exec(&exec.id)).await?;
        let exit_code = info.exit_code;
        let timed_out =
            matches!((timeout, exit_code), (Some(t), Some(137)) if started.elapsed() >= t);
        if exit_code.is_none() {
            return Err(self
                .gone_or(
                    "running an exec",
                    SandboxError::Shell {
                        container: self.id.clone(),
                        detail: "exec finished without an exit code".into(),
                    },
                )
                .await);
        }
        Ok(ExecOutput {
            output: cap.finish(),
            exit_code,
            timed_out,
        })
    }

    // ------------------------------------------------------------------------------------------
    // persistent shell

    /// (Re)starts the persistent shell, restoring exported variables and cwd saved by the
    /// previous one.
    pub(crate) async fn start_shell(&mut self) -> Result<()> {
        self.shell = None;
        let opts = CreateExecOptions::<String> {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(vec![
                "/bin/bash".into(),
                "--noprofile".into(),
                "--norc".into(),
            ]),
            env: Some(SHELL_ENV.iter().map(|s| s.to_string()).collect()),
            working_dir: Some(self.spec.workdir.clone()),
            ..Default::default()
        };
        let exec = match api("create exec", self.rt.docker().create_exec(&self.id, opts)).await {
            Ok(e) => e,
            Err(e) => return Err(self.gone_or("starting the shell", e).await),
        };
        let start = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(256 * 1024),
        };
        let res = match api(
            "start exec",
            self.rt.docker().start_exec(&exec.id, Some(start)),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.gone_or("starting the shell", e).await),
        };
        let StartExecResults::Attached { output, input } = res else {
            unreachable!("start_exec without detach attaches");
        };
        let mut shell = Shell {
            exec_id: exec.id,
            input: Exclusive(input),
            output: Exclusive(output),
            pid: 0,
            pending: Vec::new(),
        };
        let tag = nonce();
        let task_init = self.spec.shell_init.as_deref().map(|s| format!("{s}\n")).unwrap_or_default();
        let init = format!(
            "exec 2>&1\n\
             trap : USR1\n\
             __forge_run() {{ eval \"$__forge_cmd\"; }}\n\
             {task_init}\
             mkdir -p {STATE_DIR} 2>/dev/null\n\
             if [ -r {STATE_DIR}/env ]; then . {STATE_DIR}/env 2>/dev/null; fi\n\
             if [ -r {STATE_DIR}/cwd ]; then IFS= read -r __forge_d < {STATE_DIR}/cwd; cd \"$__forge_d\" 2>/dev/null; unset __forge_d; fi\n\
             printf '\\n__FORGE_READY_{tag}_%s__\\n' \"$$\"\n"
        );
        let shell_err = |detail: String| SandboxError::Shell {
            container: self.id.clone(),
            detail,
        };
        if let Err(e) = write_all(shell.input.get_mut(), init.as_bytes()).await {
            return Err(self.gone_or("starting the shell", shell_err(e)).await);
        }
        let deadline = TokioInstant::now() + Duration::from_secs(30);
        let marker = format!("\n__FORGE_READY_{tag}_");
        match shell
            .read_until(marker.as_bytes(), deadline, &mut |_| {})
            .await
        {
            Read::Found => {}
            Read::Timeout => {
                return Err(self
                    .gone_or(
                        "starting the shell",
                        shell_err("no answer within 30 s".into()),
                    )
                    .await)
            }
            Read::Eof => {
                return Err(self
                    .gone_or(
                        "starting the shell",
                        shell_err("bash exited at start (is /bin/bash in the image?)".into()),
                    )
                    .await)
            }
            Read::Failed(e) => return Err(self.gone_or("starting the shell", shell_err(e)).await),
        }
        let mut pid = Vec::new();
        if !matches!(
            shell
                .read_until(b"__\n", deadline, &mut |b| pid.extend_from_slice(b))
                .await,
            Read::Found
        ) {
            return Err(shell_err("truncated ready line".into()));
        }
        shell.pid = String::from_utf8_lossy(&pid)
            .trim()
            .parse()
            .map_err(|_| shell_err(format!("bad pid {:?}", String::from_utf8_lossy(&pid))))?;
        self.shell = Some(shell);
        Ok(())
    }

    /// Runs `command` in the persistent shell: `cd`, `export`, functions and background jobs
    /// persist between calls. On timeout the command's process tree is killed, what it printed
    /// so far is returned with a note, and the shell stays usable (restarted with the saved
    /// cwd and exported variables if bash itself was stuck).
    pub async fn execute_bash(
        &mut self,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let timeout = timeout.unwrap_or(self.spec.default_timeout);
        if self.shell.is_none() {
            self.start_shell().await?;
        }
        let tag = nonce();
        let script = format!(
            "IFS= read -r -d '' __forge_cmd <<'__FORGE_EOF_{tag}'\n{command}\n__FORGE_EOF_{tag}\n\
             trap 'trap : USR1; return 137' USR1\n\
             __forge_run </dev/null\n\
             __forge_rc=$?\n\
             trap : USR1\n\
             export -p >{STATE_DIR}/env 2>/dev/null; printf '%s' \"$PWD\" >{STATE_DIR}/cwd 2>/dev/null\n\
             printf '\\n__FORGE_DONE_{tag}_%s__\\n' \"$__forge_rc\"\n"
        );
        let marker = format!("\n__FORGE_DONE_{tag}_");
        let mut cap = CappedOutput::new(self.spec.max_output_bytes);
        let shell = self.shell.as_mut().expect("started above");
        if let Err(e) = write_all(shell.input.get_mut(), script.as_bytes()).await {
            // The connection is gone: the container died or the shell exited.
            self.shell = None;
            let err = SandboxError::Shell {
                container: self.id.clone(),
                detail: e,
            };
            return Err(self.gone_or("sending a command to the shell", err).await);
        }
        let deadline = TokioInstant::now() + timeout;
        let read = shell
            .read_until(marker.as_bytes(), deadline, &mut |b| cap.push(b))
            .await;
        match read {
            Read::Found => {
                let code = self.read_exit_code().await?;
                Ok(ExecOutput {
                    output: cap.finish(),
                    exit_code: Some(code),
                    timed_out: false,
                })
            }
            Read::Timeout => {
                let pid = shell.pid;
                let killed = self
                    .exec(
                        &["/bin/bash", "-c", KILL_TREE, "forge-kill", &pid.to_string()],
                        None,
                    )
                    .await;
                tracing::debug!(container = %self.id, ?killed, "killed timed-out command tree");
                let grace = TokioInstant::now() + Duration::from_secs(3);
                let shell = self.shell.as_mut().expect("still there");
                let again = shell
                    .read_until(marker.as_bytes(), grace, &mut |b| cap.push(b))
                    .await;
                let secs = timeout.as_secs_f64();
                let (code, note) = match again {
                    Read::Found => (
                        Some(self.read_exit_code().await?),
                        format!("\n[Command timed out after {secs} s and was killed (with every process it started). The shell is still usable: cwd and environment are kept.]"),
                    ),
                    _ => {
                        self.recover_shell().await?;
                        (
                            None,
                            format!("\n[Command timed out after {secs} s and was killed; the shell itself was stuck and has been restarted in the last working directory with the exported environment.]"),
                        )
                    }
                };
                let mut output = cap.finish();
                output.push_str(&note);
                Ok(ExecOutput {
                    output,
                    exit_code: code,
                    timed_out: true,
                })
            }
            Read::Eof | Read::Failed(_) => {
                let exec_id = shell.exec_id.clone();
                self.shell = None;
                // Did the container die, or did the command end the shell (`exit 3`)?
                if let Some((state, oom_killed)) = self.state().await?.filter(|(s, _)| s != "running") {
                    return Err(SandboxError::ContainerGone {
                        container: self.id.clone(),
                        state,
                        during: format!("running `{}`", clip_cmd(command)),
                        oom_killed,
                    });
                }
                let code = api("inspect exec", self.rt.docker().inspect_exec(&exec_id))
                    .await
                    .ok()
                    .and_then(|i| i.exit_code);
                if let Err(e) = self.start_shell().await {
                    return Err(match e {
                        SandboxError::ContainerGone {
                            container, state, oom_killed, ..
                        } => SandboxError::ContainerGone {
                            container,
                            state,
                            during: format!("running `{}`", clip_cmd(command)),
                            oom_killed,
                        },
                        e => e,
                    });
                }
                let mut output = cap.finish();
                output.push_str("\n[The shell exited; a new shell was started in the last working directory with the exported environment.]");
                Ok(ExecOutput {
                    output,
                    exit_code: code,
                    timed_out: false,
                })
            }
        }
    }

    async fn read_exit_code(&mut self) -> Result<i64> {
        let shell = self.shell.as_mut().expect("shell present");
        let mut rc = Vec::new();
        let deadline = TokioInstant::now() + Duration::from_secs(10);
        match shell
            .read_until(b"__\n", deadline, &mut |b| rc.extend_from_slice(b))
            .await
        {
            Read::Found => {
                String::from_utf8_lossy(&rc)
                    .trim()
                    .parse()
                    .map_err(|_| SandboxError::Shell {
                        container: self.id.clone(),
                        detail: format!("bad exit code line {:?}", String::from_utf8_lossy(&rc)),
                    })
            }
            _ => Err(SandboxError::Shell {
                container: self.id.clone(),
                detail: "exit code line missing".into(),
            }),
        }
    }

    /// The shell is stuck (a builtin loop) or cannot be reached: kill it and start a new one.
    /// If no exec can even start (pids exhausted by a fork bomb), restart the container: the
    /// filesystem is kept, every process dies.
    async fn recover_shell(&mut self) -> Result<()> {
        let pid = self.shell.take().map(|s| s.pid);
        if let Some(pid) = pid {
            let script = format!("{KILL_TREE}\nkill -KILL {pid} 2>/dev/null; exit 0");
            let ok = matches!(
                self.exec(
                    &["/bin/bash", "-c", &script, "forge-kill", &pid.to_string()],
                    Some(Duration::from_secs(20))
                )
                .await,
                Ok(ExecOutput {
                    exit_code: Some(0),
                    ..
                })
            );
            if ok && self.start_shell().await.is_ok() {
                return Ok(());
            }
        }
        tracing::warn!(container = %self.id, "shell unrecoverable; restarting the container");
        self.restart_container().await?;
        self.start_shell().await
    }

    /// Restarts the container (kills every process in it, keeps its filesystem).
    pub async fn restart_container(&mut self) -> Result<()> {
        self.shell = None;
        let opts = RestartContainerOptions {
            t: Some(0),
            signal: None,
        };
        if let Err(e) = api(
            "restart container",
            self.rt.docker().restart_container(&self.id, Some(opts)),
        )
        .await
        {
            return Err(self.gone_or("restarting the container", e).await);
        }
        Ok(())
    }

    /// Puts the sandbox back to a clean state for reuse: every process killed, the workdir's git
    /// checkout reset (`git reset --hard`, `git clean -fdx`) when it is one, shell state and
    /// editor history forgotten, a new shell started.
    pub async fn reset(&mut self) -> Result<()> {
        self.shell = None;
        self.history.clear();
        self.exec(&["/bin/bash", "-c", KILL_ALL], None).await?;
        let script = format!(
            "rm -rf {STATE_DIR}; \
             if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
               git reset -q --hard && git clean -q -fdx; fi"
        );
        let out = self
            .exec_in(
                &["/bin/bash", "-c", &script],
                Some(&self.spec.workdir.clone()),
                Some(Duration::from_secs(120)),
            )
            .await?;
        if out.exit_code != Some(0) {
            return Err(SandboxError::Shell {
                container: self.id.clone(),
                detail: format!("reset failed (exit {:?}): {}", out.exit_code, out.output),
            });
        }
        self.start_shell().await
    }

    // ------------------------------------------------------------------------------------------
    // files

    /// Writes one file (parents are created), with the given permission bits.
    pub async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || !path.starts_with('/') {
            return Err(self.transfer_err(path, "path must be absolute and name a file"));
        }
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, rel, data)
            .map_err(|e| self.transfer_err(path, &e.to_string()))?;
        let tar = builder
            .into_inner()
            .map_err(|e| self.transfer_err(path, &e.to_string()))?;
        self.upload_tar("/", tar).await
    }

    /// Extracts a tar archive into `dest_dir` in the container.
    pub async fn upload_tar(&self, dest_dir: &str, tar: Vec<u8>) -> Result<()> {
        let opts = UploadToContainerOptions {
            path: dest_dir.to_string(),
            ..Default::default()
        };
        match api(
            "upload to container",
            self.rt.docker().upload_to_container(
                &self.id,
                Some(opts),
                bollard::body_full(tar.into()),
            ),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.gone_or("uploading files", e).await),
        }
    }

    /// Downloads `path` as a tar archive (at most `max_bytes`).
    pub async fn download_tar(&self, path: &str, max_bytes: usize) -> Result<Vec<u8>> {
        let opts = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self
            .rt
            .docker()
            .download_from_container(&self.id, Some(opts));
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let err = SandboxError::docker("download from container", e);
                    return Err(self.gone_or("downloading files", err).await);
                }
            };
            buf.extend_from_slice(&chunk);
            if buf.len() > max_bytes {
                return Err(self.transfer_err(path, &format!("larger than {max_bytes} bytes")));
            }
        }
        Ok(buf)
    }

    /// Reads one regular file: its bytes and permission bits.
    pub async fn read_file(&self, path: &str, max_bytes: usize) -> Result<(Vec<u8>, u32)> {
        let tar = self.download_tar(path, max_bytes + 64 * 1024).await?;
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive
            .entries()
            .map_err(|e| self.transfer_err(path, &e.to_string()))?;
        let Some(entry) = entries.next() else {
            return Err(self.transfer_err(path, "empty archive"));
        };
        let mut entry = entry.map_err(|e| self.transfer_err(path, &e.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(self.transfer_err(path, "not a regular file"));
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)
            .map_err(|e| self.transfer_err(path, &e.to_string()))?;
        Ok((data, mode))
    }

    fn transfer_err(&self, path: &str, detail: &str) -> SandboxError {
        SandboxError::Transfer {
            container: self.id.clone(),
            path: path.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Disk blocks under `dir` in bytes (`du -sx`: symlinks not followed, one filesystem).
fn disk_usage(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::symlink_metadata(dir)?.dev();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let m = std::fs::symlink_metadata(&path)?;
            total += m.blocks() * 512;
            if m.is_dir() && m.dev() == device {
                stack.push(path);
            }
        }
    }
    Ok(total)
}

async fn write_all(
    input: &mut Pin<Box<dyn AsyncWrite + Send>>,
    data: &[u8],
) -> std::result::Result<(), String> {
    let fut = async {
        input.write_all(data).await?;
        input.flush().await
    };
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("writing to the shell blocked for 30 s".into()),
    }
}

fn clip_cmd(c: &str) -> String {
    let c = c.trim();
    if c.chars().count() > 80 {
        format!("{}...", c.chars().take(80).collect::<String>())
    } else {
        c.to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.shell = None;
        let id = std::mem::take(&mut self.id);
        let engine = self.rt.engine().clone();
        // Drop cannot await: remove from a helper thread with its own runtime and wait for it,
        // so that even a panicking test leaves no container behind.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    match Runtime::connect_engine(&engine).await {
                        Ok(r) => {
                            if let Err(e) = r.remove_container(&id).await {
                                tracing::warn!(container = %id, error = %e, "could not remove dropped sandbox; the reaper will");
                            }
                        }
                        Err(e) => tracing::warn!(container = %id, error = %e, "could not remove dropped sandbox; the reaper will"),
                    }
                });
            }
        });
        let _ = handle.join();
    }
}
