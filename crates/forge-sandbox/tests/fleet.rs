//! The fleet against two real engines: this machine's and a second dockerd the test starts in its
//! own network namespace, reached over TCP with TLS client certificates
//! (`scripts/fixtures/second-docker-engine.sh`). Under `CI=true` a missing engine, base image or
//! the means to start the second engine (root, `ip`, `dockerd`) FAILS the test.

use std::time::{Duration, Instant};

use forge_sandbox::testing::{require_docker, SecondEngine};
use forge_sandbox::{EngineSpec, Fleet, FleetOptions, Limits, PullPolicy, SandboxError, SandboxSpec, ToolCall, DEFAULT_IMAGE};

fn quick() -> FleetOptions {
    FleetOptions {
        ping_timeout: Duration::from_secs(2),
        check_interval: Duration::from_secs(1),
        first_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        all_down_timeout: Duration::from_secs(3),
    }
}

fn spec(label: &str) -> SandboxSpec {
    SandboxSpec::new(DEFAULT_IMAGE).label("forge.test", label)
}

async fn echo(sandbox: &mut forge_sandbox::Sandbox) -> String {
    let call = ToolCall { name: "execute_bash".into(), arguments: serde_json::json!({"command": "echo placed"}) };
    sandbox.call(&call).await.expect("the call runs").output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_transfer_capacity_outage_and_return() {
    let test = "fleet-placement";
    let Some(local) = require_docker(test, DEFAULT_IMAGE).await else { return };
    let tmp = tempfile::Builder::new().prefix("forge-fleet-").tempdir_in("/tmp").unwrap();
    let Some(second) = SecondEngine::start(test, &tmp.path().join("engine2")) else { return };
    let label = format!("{test}-{}", std::process::id());
    let limits = Limits::default();

    // 1. the local engine (room for one) has the image, the second has nothing: the first
    //    sandbox goes local, the second waits for no one but gets the image streamed over
    let engines = vec![EngineSpec::new(local.endpoint()).map(|mut e| { e.max_containers = Some(1); e }).unwrap(), second.spec(2)];
    let fleet = Fleet::connect(&engines, quick()).await.unwrap();
    let first = fleet.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.unwrap();
    assert_eq!(first.endpoint(), local.endpoint(), "the engine that has the image first");
    let mut on_local = first.runtime().create(&spec(&label)).await.unwrap();
    let second_place = fleet.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.unwrap();
    assert_eq!(second_place.endpoint(), second.host, "the local engine is full");
    let mut on_second = second_place.runtime().create(&spec(&label)).await.unwrap();
    assert_eq!(echo(&mut on_local).await.trim(), "placed");
    assert_eq!(echo(&mut on_second).await.trim(), "placed");
    let m = fleet.metrics();
    assert_eq!(m.engines[1].image_transfers, 1, "{m:?}");
    assert!(m.engines[1].transfer_bytes > 10 << 20, "the base image's layers moved: {m:?}");
    assert_eq!(fleet.containers_now()[&second.host], 1);

    // 2. both full (1 + 2): a third placement waits until room frees up
    let third = fleet.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.unwrap();
    assert_eq!(third.endpoint(), second.host);
    let waiting = {
        let fleet = fleet.clone();
        tokio::spawn(async move { fleet.place(DEFAULT_IMAGE, &Limits::default(), PullPolicy::Never).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "placed beyond every engine's room");
    drop(third);
    let fourth = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("room freed up").unwrap().unwrap();
    assert_eq!(fourth.endpoint(), second.host);
    assert_eq!(fleet.metrics().placement_waits, 1);
    drop(fourth);

    // 3. the second engine dies with a sandbox on it: its calls fail as the engine's failure,
    //    the fleet marks it down and places on the local engine only
    second.kill();
    let err = on_second.call(&ToolCall { name: "execute_bash".into(), arguments: serde_json::json!({"command": "true"}) }).await.unwrap_err();
    assert!(!err.is_policy_fault(), "an engine outage is never the policy's doing: {err}");
    assert!(fleet.confirm_down(second_place.runtime()).await);
    let _ = on_second.remove().await;
    drop(on_second);
    drop(second_place);
    on_local.remove().await.unwrap();
    drop(first);
    let m = fleet.metrics();
    assert_eq!((m.engines[1].up, m.engines[1].failures), (false, 1), "{m:?}");
    let elsewhere = fleet.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.unwrap();
    assert_eq!(elsewhere.endpoint(), local.endpoint());
    drop(elsewhere);

    // 4. it comes back (same disk): the health checks find it, the sandbox the outage cut off is
    //    removed before anything is placed there again
    second.restart();
    let back = Instant::now();
    while !fleet.metrics().engines[1].up {
        assert!(back.elapsed() < Duration::from_secs(20), "the engine's return was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second.sandboxes().is_empty(), "the cut-off sandbox is removed: {:?}", second.sandboxes());
    let blocker = fleet.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.unwrap();
    let again = fleet.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.unwrap();
    assert_eq!((blocker.endpoint(), again.endpoint()), (local.endpoint(), second.host.as_str()));
    drop((blocker, again));

    // 5. every engine down: a placement fails within all_down_timeout naming each engine, and
    //    the next one at once
    let only_second = Fleet::connect(&[second.spec(2)], quick()).await.unwrap();
    let its_runtime = only_second.any_runtime().unwrap();
    second.kill();
    assert!(only_second.confirm_down(&its_runtime).await);
    let t = Instant::now();
    let err = only_second.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.unwrap_err();
    assert!(matches!(err, SandboxError::NoEngineUp { .. }), "{err}");
    assert!(err.to_string().contains(&second.host), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "gave up in {:?}", t.elapsed());
    let t = Instant::now();
    assert!(only_second.place(DEFAULT_IMAGE, &limits, PullPolicy::Never).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(1), "the next placement fails at once");
    forge_sandbox::testing::assert_no_containers_left(&local, &label).await;
}
