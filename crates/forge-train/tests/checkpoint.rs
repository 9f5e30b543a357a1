//! Atomic checkpoint directories: a failed or crashed write never leaves `step-N/`, keep-last-K
//! pruning, finding the latest complete checkpoint.

use std::fs;

use forge_train::checkpoint::MARKER_FILE;
use forge_train::{Checkpoints, TrainError};

fn write_files(dir: &std::path::Path, content: &str) -> forge_train::Result<()> {
    fs::write(dir.join("model.safetensors"), content).unwrap();
    fs::create_dir(dir.join("extra")).unwrap();
    fs::write(dir.join("extra/rng.json"), "{}").unwrap();
    Ok(())
}

fn entries(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn save_writes_a_complete_directory() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path().join("checkpoints"));
    assert!(checkpoints.latest().unwrap().is_none(), "no directory yet = no checkpoint");
    let path = checkpoints.save(10, |tmp| write_files(tmp, "weights")).unwrap();
    assert_eq!(path, checkpoints.step_dir(10));
    assert_eq!(fs::read_to_string(path.join("model.safetensors")).unwrap(), "weights");
    assert!(path.join("extra/rng.json").is_file() && path.join(MARKER_FILE).is_file());
    assert_eq!(entries(checkpoints.root()), vec!["step-10"], "no temporary directory is left");
    assert_eq!(checkpoints.latest().unwrap().unwrap().0, 10);
}

#[test]
fn a_failed_write_leaves_no_step_directory() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path());
    checkpoints.save(1, |tmp| write_files(tmp, "good")).unwrap();
    let err = checkpoints
        .save(2, |tmp| {
            fs::write(tmp.join("model.safetensors"), "half of it").unwrap();
            Err(TrainError::InvalidConfig("disk full (simulated)".into()))
        })
        .unwrap_err();
    assert!(matches!(err, TrainError::CheckpointWrite { step: 2, .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(entries(dir.path()), vec!["step-1"]);
    assert_eq!(checkpoints.latest().unwrap().unwrap().0, 1);
}

#[test]
fn a_crash_mid_write_leaves_no_step_directory() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path());
    checkpoints.save(1, |tmp| write_files(tmp, "good")).unwrap();
    // A panic stands in for the process dying: the temporary directory stays behind.
    let crashed = std::panic::catch_unwind(|| {
        checkpoints.save(2, |tmp| {
            fs::write(tmp.join("model.safetensors"), "half").unwrap();
            panic!("simulated crash mid-write (this panic is expected)");
        })
    });
    assert!(crashed.is_err());
    assert!(!checkpoints.step_dir(2).exists());
    assert_eq!(entries(dir.path()).len(), 2, "step-1 and the crashed temporary");
    assert_eq!(checkpoints.latest().unwrap().unwrap().0, 1, "the temporary is never taken for a checkpoint");
    assert_eq!(checkpoints.remove_stale_temporaries().unwrap(), 1);
    assert_eq!(entries(dir.path()), vec!["step-1"]);
}

#[test]
fn directories_without_a_valid_marker_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path());
    checkpoints.save(5, |tmp| write_files(tmp, "good")).unwrap();
    fs::create_dir(dir.path().join("step-9")).unwrap(); // copied by hand, half-way
    fs::write(dir.path().join("step-9/model.safetensors"), "partial").unwrap();
    fs::create_dir(dir.path().join("step-8")).unwrap(); // marker naming another step
    fs::copy(checkpoints.step_dir(5).join(MARKER_FILE), dir.path().join("step-8").join(MARKER_FILE)).unwrap();
    fs::create_dir(dir.path().join("notes")).unwrap();
    let steps: Vec<u64> = checkpoints.list().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![5]);
}

#[test]
fn keep_last_k_prunes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path());
    for step in [100, 20, 300, 40] {
        checkpoints.save(step, |tmp| write_files(tmp, &step.to_string())).unwrap();
    }
    // numeric order, not lexicographic (step-100 is older than step-300, newer than step-40)
    assert_eq!(checkpoints.prune(2).unwrap(), vec![20, 40]);
    assert_eq!(entries(dir.path()), vec!["step-100", "step-300"]);
    assert_eq!(checkpoints.latest().unwrap().unwrap().0, 300);
    assert!(checkpoints.prune(5).unwrap().is_empty());
}

#[test]
fn saving_a_step_again_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path());
    checkpoints.save(3, |tmp| write_files(tmp, "first")).unwrap();
    checkpoints.save(3, |tmp| write_files(tmp, "second")).unwrap();
    assert_eq!(fs::read_to_string(checkpoints.step_dir(3).join("model.safetensors")).unwrap(), "second");
    assert_eq!(entries(dir.path()), vec!["step-3"]);
}
