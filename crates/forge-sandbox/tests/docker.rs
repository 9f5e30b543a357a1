//! Tests against the real Docker Engine and the image built by `scripts/setup/build-base-image.sh`.
//!
//! Under `CI=true` a missing engine or image FAILS the test; elsewhere the test is skipped with
//! a loud message. Every test labels its containers and checks that none is left at its end.

use std::time::{Duration, Instant};

use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_sandbox::*;
use serde_json::json;

fn image() -> String {
    std::env::var("FORGE_SANDBOX_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string())
}

struct Ctx {
    rt: Runtime,
    label: String,
}

impl Ctx {
    fn spec(&self) -> SandboxSpec {
        SandboxSpec::new(image()).label("forge.test", &self.label)
    }

    async fn sandbox(&self) -> Sandbox {
        self.rt.create(&self.spec()).await.expect("create sandbox")
    }

    /// Asserts that no container with this test's label exists any more.
    async fn assert_no_leak(&self) {
        assert_no_containers_left(&self.rt, &self.label).await;
    }
}

/// Connects and checks the image; `None` (skip, loudly) outside CI, panic under CI=true.
async fn ctx(test: &str) -> Option<Ctx> {
    let rt = require_docker(test, &image()).await?;
    Some(Ctx {
        rt,
        label: format!("{test}-{}", std::process::id()),
    })
}

async fn bash(sb: &mut Sandbox, cmd: &str) -> ExecOutput {
    sb.execute_bash(cmd, Some(Duration::from_secs(60)))
        .await
        .expect("execute_bash")
}

#[tokio::test]
async fn cwd_env_and_functions_persist() {
    let Some(c) = ctx("persist").await else {
        return;
    };
    let mut sb = c.sandbox().await;
    let o = bash(
        &mut sb,
        "mkdir -p /tmp/work && cd /tmp/work && export FOO=bar && BAZ=qux && f() { echo \"f:$1\"; }",
    )
    .await;
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    let o = bash(&mut sb, "pwd; echo $FOO $BAZ; f 1").await;
    assert_eq!(o.output, "/tmp/work\nbar qux\nf:1\n");
    // stderr merged in order, exit code reported, no trailing marker junk
    let o = bash(&mut sb, "echo out; echo err >&2; false").await;
    assert_eq!(o.output, "out\nerr\n");
    assert_eq!(o.exit_code, Some(1));
    let o = bash(&mut sb, "printf 'no newline'").await;
    assert_eq!(o.output, "no newline");
    // programs reading stdin get EOF instead of eating the protocol
    let o = bash(&mut sb, "cat; echo after-cat").await;
    assert_eq!(o.output, "after-cat\n");
    // multi-line commands and heredocs
    let o = bash(
        &mut sb,
        "cat <<'EOF'\nline 1\n  line 2\nEOF\nif true; then\n  echo yes\nfi",
    )
    .await;
    assert_eq!(o.output, "line 1\n  line 2\nyes\n");
    let o = bash(&mut sb, "exit 3").await;
    assert_eq!(o.exit_code, Some(3));
    assert!(o.output.contains("new shell was started"), "{o:?}");
    let o = bash(&mut sb, "pwd; echo $FOO").await;
    assert_eq!(
        o.output, "/tmp/work\nbar\n",
        "cwd and exported env survive a shell restart"
    );
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn timeout_returns_in_time_and_shell_stays_usable() {
    let Some(c) = ctx("timeout").await else {
        return;
    };
    let mut sb = c.sandbox().await;
    bash(&mut sb, "cd /tmp && export KEEP=1").await;
    let t = Instant::now();
    let o = sb
        .execute_bash(
            "echo started; sleep 100; echo never",
            Some(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(o.timed_out, "{o:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert!(o.output.starts_with("started\n"), "{o:?}");
    assert!(!o.output.contains("never"));
    assert!(o.output.contains("timed out after 2 s"), "{o:?}");
    let t = Instant::now();
    let o = bash(
        &mut sb,
        "pwd; echo $KEEP; pgrep -f 'sleep 100' || echo no-sleep-left",
    )
    .await;
    assert_eq!(o.output, "/tmp\n1\nno-sleep-left\n");
    assert!(t.elapsed() < Duration::from_secs(1));
    // a builtin loop keeps bash itself busy: the shell is restarted, state restored
    let t = Instant::now();
    let o = sb
        .execute_bash("while :; do :; done", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(
        o.timed_out && t.elapsed() < Duration::from_secs(8),
        "{o:?} {:?}",
        t.elapsed()
    );
    let o = bash(&mut sb, "pwd; echo $KEEP").await;
    assert_eq!(o.output, "/tmp\n1\n");
    // one-shot exec timeout
    let t = Instant::now();
    let o = sb
        .exec(&["sleep", "100"], Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(o.timed_out && t.elapsed() < Duration::from_secs(3), "{o:?}");
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn fork_bomb_is_contained_by_pids_limit() {
    let Some(c) = ctx("forkbomb").await else {
        return;
    };
    let mut spec = c.spec();
    spec.limits.pids = 64;
    let mut sb = c.rt.create(&spec).await.unwrap();
    let id = sb.id().to_string();
    let docker = c.rt.docker().clone();
    let probe = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        use futures_util::StreamExt;
        let opts = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let s = docker.stats(&id, Some(opts)).next().await.unwrap().unwrap();
        s.pids_stats.and_then(|p| p.current)
    });
    let t = Instant::now();
    let o = sb
        .execute_bash(
            "bomb() { bomb | bomb & }; bomb; sleep 30",
            Some(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    assert!(o.timed_out, "{o:?}");
    let pids = probe.await.unwrap();
    eprintln!(
        "fork bomb: pids in container during the bomb: {pids:?}; call took {:?}",
        t.elapsed()
    );
    if let Some(p) = pids {
        assert!(p <= 64, "pids limit exceeded: {p}");
        assert!(p >= 32, "the bomb did not run? only {p} pids");
    }
    // the sandbox recovers (tree killed, or container restarted) and is usable again
    let o = bash(&mut sb, "echo alive").await;
    assert_eq!(o.output, "alive\n");
    assert!(t.elapsed() < Duration::from_secs(30));
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn ten_megabytes_of_output_are_clipped_head_and_tail() {
    let Some(c) = ctx("clip").await else { return };
    let mut sb = c.sandbox().await;
    let t = Instant::now();
    // seq 1 1500000 prints 10,888,896 bytes
    let o = bash(&mut sb, "seq 1 1500000").await;
    eprintln!("10 MB of output in {:?}", t.elapsed());
    assert_eq!(o.exit_code, Some(0));
    assert!(o.output.len() < 31_000, "{}", o.output.len());
    assert!(o.output.starts_with("1\n2\n3\n"));
    assert!(o.output.ends_with("1499999\n1500000\n"));
    assert!(
        o.output
            .contains("of 10888896 bytes omitted from the middle"),
        "{}",
        &o.output[14_000..16_500]
    );
    assert_eq!(bash(&mut sb, "echo next").await.output, "next\n");
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn network_is_off_by_default() {
    let Some(c) = ctx("network").await else {
        return;
    };
    let mut sb = c.sandbox().await;
    let o = bash(
        &mut sb,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(o.output, "lo\n", "only loopback expected");
    // TEST-NET-1 (documentation range): with no interface the kernel refuses before any packet.
    let o = bash(&mut sb, "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=2)\" 2>&1 | tail -n1").await;
    assert!(o.output.contains("Network is unreachable"), "{o:?}");
    let info =
        c.rt.docker()
            .inspect_container(sb.id(), None)
            .await
            .unwrap();
    let hc = info.host_config.unwrap();
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(hc.binds.unwrap_or_default().is_empty() && hc.mounts.unwrap_or_default().is_empty());
    assert_eq!(hc.pids_limit, Some(512));
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

/// Expected outcome of one editor call.
enum Want {
    Ok(&'static str),
    Err(&'static str),
}

#[tokio::test]
async fn editor_semantics_table() {
    let Some(c) = ctx("editor").await else { return };
    let mut sb = c.sandbox().await;
    // The editor must not need Python in the image: hide it.
    bash(
        &mut sb,
        "mv /usr/bin/python3* /tmp/ && ! command -v python3",
    )
    .await;
    bash(&mut sb, "mkdir -p /w/sub/deep/deeper /w/.hidden && touch /w/a.txt /w/sub/b.txt /w/sub/deep/c.txt /w/sub/deep/deeper/d.txt /w/.hidden/h /w/sub/.h2 && printf 'x\\xff\\n' > /w/bin.dat && chmod 755 /w/a.txt").await;
    use Want::*;
    let table: Vec<(serde_json::Value, Want)> = vec![
        (json!({"command": "create", "path": "/w/new/dir/f.py", "file_text": "a = 1\nb = 2\nc = 3\n"}), Ok("File created successfully at: /w/new/dir/f.py")),
        (json!({"command": "create", "path": "/w/new/dir/f.py", "file_text": "x"}), Err("File already exists at: /w/new/dir/f.py. Cannot overwrite")),
        (json!({"command": "create", "path": "/w/sub", "file_text": "x"}), Err("File already exists at: /w/sub")),
        (json!({"command": "create", "path": "/w/g.py"}), Err("Parameter `file_text` is required for command: create")),
        (json!({"command": "view", "path": "w/new/dir/f.py"}), Err("is not an absolute path, it should start with `/`. Maybe you meant /w/new/dir/f.py?")),
        (json!({"command": "view", "path": "/w/missing.py"}), Err("The path /w/missing.py does not exist")),
        (json!({"command": "view", "path": "/w/new/dir/f.py"}), Ok("Here's the result of running `cat -n` on /w/new/dir/f.py:\n     1\ta = 1\n     2\tb = 2\n     3\tc = 3\n")),
        (json!({"command": "view", "path": "/w/new/dir/f.py", "view_range": [2, -1]}), Ok("     2\tb = 2\n     3\tc = 3\n")),
        (json!({"command": "view", "path": "/w/new/dir/f.py", "view_range": [2, 2]}), Ok("/w/new/dir/f.py:\n     2\tb = 2\n")),
        (json!({"command": "view", "path": "/w/new/dir/f.py", "view_range": [0, 2]}), Err("should be within the range of lines of the file: [1, 3]")),
        (json!({"command": "view", "path": "/w/new/dir/f.py", "view_range": [3, 1]}), Err("should be larger or equal than its first `3`")),
        (json!({"command": "view", "path": "/w/new/dir/f.py", "view_range": [1, 7]}), Err("should be smaller than the number of lines in the file: `3`")),
        (json!({"command": "view", "path": "/w/new/dir/f.py", "view_range": [1]}), Err("It should be a list of two integers")),
        (json!({"command": "view", "path": "/w", "view_range": [1, 2]}), Err("The `view_range` parameter is not allowed when `path` points to a directory")),
        (json!({"command": "view", "path": "/w/bin.dat"}), Err("is not UTF-8 text")),
        (json!({"command": "str_replace", "path": "/w/new/dir/f.py", "old_str": "b = 2", "new_str": "b = 20"}), Ok("     2\tb = 20\n")),
        (json!({"command": "str_replace", "path": "/w/new/dir/f.py", "old_str": "zzz", "new_str": "y"}), Err("No replacement was performed, old_str `zzz` did not appear verbatim in /w/new/dir/f.py")),
        (json!({"command": "str_replace", "path": "/w/new/dir/f.py", "old_str": " = ", "new_str": "="}), Err("Multiple occurrences of old_str ` = ` (3 times) in lines [1, 2, 3]")),
        (json!({"command": "str_replace", "path": "/w/new/dir/f.py", "new_str": "y"}), Err("Parameter `old_str` is required for command: str_replace")),
        (json!({"command": "str_replace", "path": "/w/new/dir/f.py", "old_str": "a = 1", "new_str": "a = 1"}), Err("must be different")),
        (json!({"command": "str_replace", "path": "/w/sub", "old_str": "a", "new_str": "b"}), Err("The path /w/sub is a directory and only the `view` command can be used on directories")),
        (json!({"command": "str_replace", "path": "/w/nope.py", "old_str": "a", "new_str": "b"}), Err("The path /w/nope.py does not exist")),
        (json!({"command": "insert", "path": "/w/new/dir/f.py", "insert_line": 1, "new_str": "inserted = True"}), Ok("     2\tinserted = True\n")),
        (json!({"command": "insert", "path": "/w/new/dir/f.py", "insert_line": 99, "new_str": "x"}), Err("Invalid `insert_line` parameter: 99. It should be within the range of lines of the file: [0, 4]")),
        (json!({"command": "insert", "path": "/w/new/dir/f.py", "new_str": "x"}), Err("Parameter `insert_line` is required for command: insert")),
        (json!({"command": "insert", "path": "/w/new/dir/f.py", "insert_line": 0}), Err("Parameter `new_str` is required for command: insert")),
        (json!({"command": "undo_edit", "path": "/w/new/dir/f.py"}), Ok("Last edit to /w/new/dir/f.py undone successfully")),
        (json!({"command": "view", "path": "/w/new/dir/f.py"}), Ok("     1\ta = 1\n     2\tb = 20\n     3\tc = 3\n")),
        (json!({"command": "undo_edit", "path": "/w/new/dir/f.py"}), Ok("     2\tb = 2\n")),
        (json!({"command": "undo_edit", "path": "/w/new/dir/f.py"}), Err("No edit history found for /w/new/dir/f.py")),
        (json!({"command": "str_replace", "path": "/w/a.txt", "old_str": "", "new_str": "x"}), Err("must not be empty")),
        (json!({"command": "insert", "path": "/w/a.txt", "insert_line": 0, "new_str": "first"}), Ok("     1\tfirst\n")),
        (json!({"command": "delete", "path": "/w/a.txt"}), Err("Unrecognized command delete. The allowed commands for the str_replace_editor tool are: view, create, str_replace, insert, undo_edit")),
        (json!({"command": "view", "path": "/w", "bogus": 1}), Err("invalid str_replace_editor arguments")),
    ];
    for (i, (args, want)) in table.iter().enumerate() {
        let call = ToolCall {
            name: STR_REPLACE_EDITOR.into(),
            arguments: args.clone(),
        };
        let o = sb.call(&call).await.unwrap();
        match want {
            Ok(s) => {
                assert_eq!(o.exit_code, Some(0), "row {i} {args}: {}", o.output);
                assert!(
                    o.output.contains(s),
                    "row {i} {args}: want {s:?} in\n{}",
                    o.output
                );
            }
            Err(s) => {
                assert_eq!(o.exit_code, Some(1), "row {i} {args}: {}", o.output);
                assert!(
                    o.output.starts_with("ERROR: ") && o.output.contains(s),
                    "row {i} {args}: want {s:?} in\n{}",
                    o.output
                );
            }
        }
    }
    // directory view: two levels, hidden excluded
    let o = sb
        .call(&ToolCall {
            name: STR_REPLACE_EDITOR.into(),
            arguments: json!({"command": "view", "path": "/w"}),
        })
        .await
        .unwrap();
    assert!(o.output.starts_with(
        "Here's the files and directories up to 2 levels deep in /w, excluding hidden items:\n"
    ));
    for want in ["/w/a.txt", "/w/sub/b.txt", "/w/sub/deep\n", "/w/new/dir"] {
        assert!(o.output.contains(want), "{want} in {}", o.output);
    }
    for not in ["/w/sub/deep/c.txt", ".hidden", ".h2"] {
        assert!(!o.output.contains(not), "{not} not in {}", o.output);
    }
    // edits keep the file's mode; the file on disk is what the editor said
    let o = bash(
        &mut sb,
        "stat -c %a /w/a.txt; cat /w/a.txt; cat /w/new/dir/f.py",
    )
    .await;
    assert_eq!(o.output, "755\nfirst\na = 1\nb = 2\nc = 3\n");
    // long files are clipped with a notice
    bash(&mut sb, "seq 1 20000 > /w/long.txt").await;
    let o = sb
        .call(&ToolCall {
            name: STR_REPLACE_EDITOR.into(),
            arguments: json!({"command": "view", "path": "/w/long.txt"}),
        })
        .await
        .unwrap();
    assert!(o.output.ends_with(editor::CLIPPED_NOTICE));
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn tool_dispatch_errors_and_finish() {
    let Some(c) = ctx("dispatch").await else {
        return;
    };
    let mut sb = c.sandbox().await;
    let call = |name: &str, a: serde_json::Value| ToolCall {
        name: name.into(),
        arguments: a,
    };
    let o = sb
        .call(&call("execute_bash", json!({"command": "echo hi"})))
        .await
        .unwrap();
    assert_eq!(
        (o.output.as_str(), o.exit_code, o.timed_out),
        ("hi\n", Some(0), false)
    );
    let o = sb
        .call(&call(
            "execute_bash",
            json!("{\"command\": \"echo str-args\"}"),
        ))
        .await
        .unwrap();
    assert_eq!(o.output, "str-args\n");
    let o = sb.call(&call("execute_bash", json!({}))).await.unwrap();
    assert!(o.output.contains("`command`") && o.exit_code == Some(1));
    let o = sb
        .call(&call("execute_bash", json!({"command": "  "})))
        .await
        .unwrap();
    assert!(o.output.contains("empty"));
    let o = sb
        .call(&call(
            "execute_bash",
            json!({"command": "sleep 5", "timeout": 0.5}),
        ))
        .await
        .unwrap();
    assert!(o.timed_out);
    let o = sb
        .call(&call(
            "execute_bash",
            json!({"command": "true", "timeout": -1}),
        ))
        .await
        .unwrap();
    assert!(o.output.contains("positive"));
    let o = sb.call(&call("browse", json!({}))).await.unwrap();
    assert!(o.output.contains("Unknown tool `browse`"));
    let o = sb
        .call(&call("finish", json!({"message": "done"})))
        .await
        .unwrap();
    assert!(o.finished && o.output == "done");
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_sandboxes_in_parallel() {
    let Some(c) = ctx("parallel").await else {
        return;
    };
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let rt = c.rt.clone();
        let spec = c.spec().workdir(format!("/task{i}"));
        tasks.push(tokio::spawn(async move {
            let mut sb = rt.create(&spec).await?;
            sb.write_file("/task/id", format!("{i}").as_bytes(), 0o644)
                .await?;
            let o = sb
                .execute_bash("echo $(pwd) $(cat /task/id); python3 -c 'print(6*7)'", None)
                .await?;
            sb.remove().await?;
            Ok::<_, SandboxError>(o.output)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out, format!("/task{i} {i}\n42\n"));
    }
    eprintln!(
        "16 sandboxes created, used and removed in parallel in {:?}",
        t.elapsed()
    );
    c.assert_no_leak().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_task_leaves_no_container() {
    let Some(c) = ctx("panic").await else { return };
    let rt = c.rt.clone();
    let spec = c.spec();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut sb = rt.create(&spec).await.unwrap();
        tx.send(sb.id().to_string()).unwrap();
        sb.execute_bash("echo hi", None).await.unwrap();
        panic!("deliberate panic while holding a sandbox");
    });
    let id = rx.await.unwrap();
    assert!(task.await.unwrap_err().is_panic());
    let left =
        c.rt.list_sandboxes(Some(("forge.test", &c.label)))
            .await
            .unwrap();
    assert!(!left.contains(&id), "dropped sandbox {id} still exists");
    c.assert_no_leak().await;
}

#[tokio::test]
async fn unreachable_daemon_is_a_clear_error_not_a_hang() {
    // needs no Docker: always runs
    for endpoint in ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"] {
        let t = Instant::now();
        let e = Runtime::connect_to(endpoint).await.unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(12),
            "{endpoint}: {:?}",
            t.elapsed()
        );
        assert!(matches!(e, SandboxError::DockerUnreachable { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(endpoint) && msg.contains("Start dockerd"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn missing_image_is_a_clear_error() {
    let Some(c) = ctx("noimage").await else {
        return;
    };
    let spec = SandboxSpec::new("forge/no-such-image:nope").label("forge.test", &c.label);
    let e = c.rt.create(&spec).await.unwrap_err();
    assert!(matches!(e, SandboxError::ImageMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("scripts/setup/build-base-image.sh"), "{e}");
    c.assert_no_leak().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_killed_mid_command_is_a_clear_error() {
    let Some(c) = ctx("killed").await else { return };
    let mut sb = c.sandbox().await;
    // the shell is up before the kill is armed, so the kill lands mid-command
    assert_eq!(bash(&mut sb, "echo up").await.output, "up\n");
    let id = sb.id().to_string();
    let docker = c.rt.docker().clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        docker
            .kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>)
            .await
    });
    let t = Instant::now();
    let e = sb
        .execute_bash("sleep 60", Some(Duration::from_secs(120)))
        .await
        .unwrap_err();
    killer.await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(e, SandboxError::ContainerGone { .. }), "{e:?}");
    assert!(e.to_string().contains("sleep 60"), "{e}");
    // the next call fails just as clearly
    let e = sb.execute_bash("true", None).await.unwrap_err();
    assert!(matches!(e, SandboxError::ContainerGone { .. }), "{e:?}");
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn files_round_trip_over_tar() {
    let Some(c) = ctx("files").await else { return };
    let mut sb = c.sandbox().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    sb.write_file("/data/x/blob.bin", &data, 0o600)
        .await
        .unwrap();
    let o = bash(&mut sb, "stat -c '%a %s' /data/x/blob.bin").await;
    assert_eq!(o.output, "600 100000\n");
    let (back, mode) = sb.read_file("/data/x/blob.bin", 1 << 20).await.unwrap();
    assert_eq!(back, data);
    assert_eq!(mode & 0o777, 0o600);
    let e = sb.read_file("/data/x/blob.bin", 1000).await.unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    let e = sb.read_file("/data/nope", 1000).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    sb.remove().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn pool_resets_and_reuses_containers() {
    let Some(c) = ctx("pool").await else { return };
    let pool = SandboxPool::new(c.rt.clone(), c.spec().workdir("/repo"), 2)
        .await
        .unwrap();
    let mut sb = pool.acquire().await.unwrap();
    let first = sb.id().to_string();
    let o = bash(
        &mut sb,
        "git init -q . && echo v1 > f && git add f && git commit -qm init && echo ok",
    )
    .await;
    assert_eq!(o.output, "ok\n", "{o:?}");
    pool.release(sb).await.unwrap();
    let mut sb = pool.acquire().await.unwrap();
    assert_eq!(sb.id(), first, "container reused");
    bash(
        &mut sb,
        "echo dirty > f; touch untracked; export LEAK=1; sleep 1000 &",
    )
    .await;
    sb.str_replace_editor(&EditorArgs {
        command: "str_replace".into(),
        path: "/repo/f".into(),
        old_str: Some("dirty".into()),
        new_str: Some("x".into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .unwrap();
    pool.release(sb).await.unwrap();
    let mut sb = pool.acquire().await.unwrap();
    assert_eq!(sb.id(), first);
    let o = bash(
        &mut sb,
        "cat f; ls; echo \"leak=$LEAK\"; pgrep -f 'sleep 1000' || echo none",
    )
    .await;
    assert_eq!(o.output, "v1\nf\nleak=\nnone\n");
    let undo = sb
        .str_replace_editor(&EditorArgs {
            command: "undo_edit".into(),
            path: "/repo/f".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(undo.unwrap_err().contains("No edit history"));
    assert_eq!(
        pool.stats().await,
        PoolStats {
            created: 1,
            reused: 2,
            discarded: 0
        }
    );
    pool.release(sb).await.unwrap();
    pool.drain().await.unwrap();
    c.assert_no_leak().await;
}

#[tokio::test]
async fn reaper_removes_containers_of_dead_runs() {
    let Some(c) = ctx("reaper").await else { return };
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let spec = c
        .spec()
        .label(LABEL_OWNER, format!("{}:{dead}", host.trim()));
    let id = c.rt.create_container(&spec).await.unwrap();
    // a living pid that is not the creator (whose start time the label records): pid reuse
    let reused = c.spec().label(LABEL_OWNER, format!("{}:1", host.trim()));
    let reused = c.rt.create_container(&reused).await.unwrap();
    let alive = c.sandbox().await; // owned by this (living) process: must survive
    let n = c.rt.reap_stale().await.unwrap();
    assert!(n >= 2);
    let left =
        c.rt.list_sandboxes(Some(("forge.test", &c.label)))
            .await
            .unwrap();
    assert!(!left.contains(&id), "stale container survived");
    assert!(!left.contains(&reused), "container of a reused pid survived");
    assert!(
        left.iter().any(|l| l == alive.id()),
        "live container was reaped"
    );
    drop(alive);
    c.assert_no_leak().await;
}

#[tokio::test]
async fn replay_runs_a_calls_file() {
    let Some(c) = ctx("replay").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls.jsonl");
    std::fs::write(&calls, [
        r#"{"name": "execute_bash", "arguments": {"command": "cd /tmp && export A=1 && pwd"}}"#,
        "",
        r#"{"name": "str_replace_editor", "arguments": {"command": "create", "path": "/tmp/t.py", "file_text": "print('x')\n"}}"#,
        r#"{"name": "execute_bash", "arguments": {"command": "python3 t.py; echo $A"}}"#,
        r#"{"name": "execute_bash", "arguments": {"command": "sleep 9", "timeout": 1}}"#,
        r#"{"name": "finish", "arguments": {"message": "bye"}}"#,
        r#"{"name": "execute_bash", "arguments": {"command": "echo not-run"}}"#,
    ].join("\n")).unwrap();
    let mut out = Vec::new();
    let s = replay(&image(), &calls, Some("/srv"), &mut out)
        .await
        .unwrap();
    assert_eq!(
        s,
        ReplaySummary {
            calls: 5,
            finished: true
        }
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"output": "/tmp\n", "exit_code": 0, "timed_out": false})
    );
    assert_eq!(lines[1]["exit_code"], 0);
    assert_eq!(lines[2]["output"], "x\n1\n");
    assert_eq!(lines[3]["timed_out"], true);
    assert_eq!(
        lines[4],
        json!({"output": "bye", "exit_code": 0, "timed_out": false, "finished": true})
    );
    std::fs::write(&calls, "{\"name\": \"execute_bash\"}\nnot json\n").unwrap();
    let e = replay(&image(), &calls, None, std::io::sink())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("calls.jsonl:2"), "{e}");
    // replay containers carry no test label: check by purpose that none is left by this process
    let left =
        c.rt.list_sandboxes(Some((
            LABEL_OWNER,
            &format!(
                "{}:{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap()
                    .trim(),
                std::process::id()
            ),
        )))
        .await
        .unwrap();
    let mine: Vec<_> = {
        let mut v = Vec::new();
        for id in left {
            let i = c.rt.docker().inspect_container(&id, None).await;
            if let Ok(i) = i {
                if i.config
                    .and_then(|c| c.labels)
                    .is_some_and(|l| l.get("forge.purpose").map(String::as_str) == Some("replay"))
                {
                    v.push(id);
                }
            }
        }
        v
    };
    assert!(mine.is_empty(), "replay left {mine:?}");
}

/// What the commands do to their own sandbox: a write past `Limits::storage_bytes` fails the
/// call with `StorageExceeded`, a policy fault; killing the container's main process ends it
/// with `ContainerGone` (also a policy fault, unlike a container removed from outside); the
/// editor answers paths the engine cannot archive (`/proc/self/...` is gone by the time it is
/// read) with an observation; a call cannot ask for more than `max_call_timeout`; the process's
/// registry of live containers follows creation and removal.
#[tokio::test]
async fn storage_limit_killed_main_process_proc_paths_and_the_call_ceiling() {
    let Some(c) = ctx("limits").await else { return };
    let mut spec = c.spec();
    spec.limits.storage_bytes = Some(8 << 20);
    spec.max_call_timeout = Duration::from_secs(1);
    let mut sb = c.rt.create(&spec).await.unwrap();
    assert!(cleanup::live_containers().contains(&sb.id().to_string()));

    let view = |path: &str| ToolCall { name: STR_REPLACE_EDITOR.into(), arguments: json!({"command": "view", "path": path}) };
    let o = sb.call(&view("/proc/self/status")).await.expect("an observation, not an error");
    assert!(o.output.contains("/proc/self/status") && o.exit_code == Some(1), "{o:?}");
    // a file whose parent is a file: the engine refuses the archive
    bash(&mut sb, "echo > /tmp/plain").await;
    let o = sb.call(&ToolCall { name: STR_REPLACE_EDITOR.into(), arguments: json!({"command": "create", "path": "/tmp/plain/new", "file_text": "x"}) }).await.expect("an observation");
    assert_eq!(o.exit_code, Some(1), "{o:?}");

    // the ceiling: a 600 s request runs 1 s
    let t = Instant::now();
    let o = sb.call(&ToolCall { name: EXECUTE_BASH.into(), arguments: json!({"command": "sleep 30", "timeout": 600}) }).await.unwrap();
    assert!(o.timed_out && t.elapsed() < Duration::from_secs(20), "{o:?} after {:?}", t.elapsed());

    let small = ToolCall { name: EXECUTE_BASH.into(), arguments: json!({"command": "head -c 1M /dev/zero > /tmp/a"}) };
    assert_eq!(sb.call(&small).await.unwrap().exit_code, Some(0));
    let big = ToolCall { name: EXECUTE_BASH.into(), arguments: json!({"command": "head -c 32M /dev/zero > /tmp/b"}) };
    let e = sb.call(&big).await.unwrap_err();
    assert!(matches!(e, SandboxError::StorageExceeded { limit_bytes, used_bytes, .. } if limit_bytes == 8 << 20 && used_bytes > limit_bytes), "{e:?}");
    assert!(e.is_policy_fault() && e.to_string().contains("disk quota exceeded"), "{e}");

    let kill = ToolCall { name: EXECUTE_BASH.into(), arguments: json!({"command": "kill -9 $(cat /proc/1/task/1/children)"}) };
    let e = sb.call(&kill).await.unwrap_err();
    assert!(matches!(&e, SandboxError::ContainerGone { state, oom_killed: false, .. } if state == "exited"), "{e:?}");
    assert!(e.is_policy_fault(), "{e}");

    let id = sb.id().to_string();
    sb.remove().await.unwrap();
    assert!(!cleanup::live_containers().contains(&id));
    // removed from outside: the infrastructure's doing
    let mut other = c.sandbox().await;
    c.rt.remove_container(other.id()).await.unwrap();
    let e = other.execute_bash("true", None).await.unwrap_err();
    assert!(matches!(e, SandboxError::ContainerGone { .. }) && !e.is_policy_fault(), "{e:?}");
    other.remove().await.unwrap();
    c.assert_no_leak().await;
}
