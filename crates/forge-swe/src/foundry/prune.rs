//! Image sharing and pruning: tasks of one repository move onto images other tasks already
//! use wherever their FAIL_TO_PASS / PASS_TO_PASS still validate there (the dependency-pruning
//! loop: try each task of the least-used image on the most-used others, keep a move only if the
//! official validation passes, repeat until no move applies); images left with no task are
//! removed. Storage is measured against the one-image-per-task baseline.

use std::collections::BTreeMap;

use forge_sandbox::Runtime;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::harness::ExecOptions;
use crate::instance::TaskInstance;

/// One image and the tasks on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageUse {
    pub image: String,
    /// Full size (base layers included).
    pub bytes: i64,
    /// Bytes above the shared runtime base (what this image adds to storage).
    pub own_bytes: i64,
    pub tasks: usize,
}

/// A task moved from one image to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Move {
    pub instance_id: String,
    pub from: String,
    pub to: String,
}

/// Storage before and after pruning.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageReport {
    pub images_before: usize,
    pub images_after: usize,
    /// The runtime base every image shares (counted once).
    pub base_bytes: i64,
    /// Base + every kept image's own bytes.
    pub shared_bytes: i64,
    pub bytes_per_task: f64,
    /// One image per task (each task its own full image, as the SWE-bench harness builds them).
    pub baseline_bytes_per_task: f64,
    pub moves: Vec<Move>,
    /// Moves tried (each one a validation: two test runs).
    pub moves_tried: usize,
    pub images: Vec<ImageUse>,
}

impl ImageReport {
    /// Measures `after` (the tasks on their final images) against `before` (on the images they
    /// were built for).
    pub async fn measure(rt: &Runtime, before: &[TaskInstance], after: &[TaskInstance]) -> Result<ImageReport> {
        let base = crate::bundled::ensure_runtime_base(rt).await?;
        let base_bytes = rt.image_info(&base).await?.size_bytes;
        let mut sizes: BTreeMap<String, i64> = BTreeMap::new();
        for t in before.iter().chain(after) {
            if let Some(img) = &t.image {
                if !sizes.contains_key(img) {
                    let size = rt.image_info(img).await.map(|i| i.size_bytes).unwrap_or(0);
                    sizes.insert(img.clone(), size);
                }
            }
        }
        let uses = |tasks: &[TaskInstance]| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for t in tasks {
                if let Some(img) = &t.image {
                    *m.entry(img.clone()).or_insert(0) += 1;
                }
            }
            m
        };
        let (used_before, used_after) = (uses(before), uses(after));
        let images: Vec<ImageUse> = used_after
            .iter()
            .map(|(img, n)| {
                let bytes = sizes[img];
                ImageUse { image: img.clone(), bytes, own_bytes: (bytes - base_bytes).max(0), tasks: *n }
            })
            .collect();
        let shared_bytes = base_bytes + images.iter().map(|i| i.own_bytes).sum::<i64>();
        let n = after.len().max(1) as f64;
        let baseline: i64 = before.iter().filter_map(|t| t.image.as_ref()).map(|i| sizes[i]).sum();
        Ok(ImageReport {
            images_before: used_before.len(),
            images_after: used_after.len(),
            base_bytes,
            shared_bytes: if after.is_empty() { 0 } else { shared_bytes },
            bytes_per_task: if after.is_empty() { 0.0 } else { shared_bytes as f64 / n },
            baseline_bytes_per_task: baseline as f64 / before.len().max(1) as f64,
            moves: Vec::new(),
            moves_tried: 0,
            images,
        })
    }
}

/// Moves tasks onto shared images until no move validates; removes the images left unused.
/// Sources are taken least-used first, targets most-used first; all tasks of a source are tried
/// on a target at once (`workers` validations in parallel), each with a time limit of four times
/// its own validation's longest run (`seconds`, at least a minute): a task that runs far slower
/// on another image does not belong there.
pub async fn prune(
    rt: &Runtime,
    tasks: &mut [TaskInstance],
    opts: &ExecOptions,
    seconds: &BTreeMap<String, f64>,
    workers: usize,
) -> Result<ImageReport> {
    let before = tasks.to_vec();
    let mut moves = Vec::new();
    let mut tried = 0usize;
    // (task, image) pairs tried (validated or not) or left: never tried again, so tasks do not
    // move back and forth and the loop ends.
    let mut seen: std::collections::BTreeSet<(String, String)> =
        tasks.iter().filter_map(|t| Some((t.instance_id.clone(), t.image.clone()?))).collect();
    let counts = |tasks: &[TaskInstance]| {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for t in tasks {
            if let Some(img) = &t.image {
                *count.entry(img.clone()).or_insert(0) += 1;
            }
        }
        count
    };
    loop {
        let mut sources: Vec<(String, usize)> = counts(tasks).into_iter().collect();
        if sources.len() < 2 {
            break;
        }
        sources.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut changed = false;
        for (src, _) in &sources {
            let now = counts(tasks);
            let Some(&src_count) = now.get(src) else { continue };
            // Only onto images at least as used: tasks consolidate, never spread.
            let mut targets: Vec<(String, usize)> = now.into_iter().filter(|(d, n)| d != src && *n >= src_count).collect();
            targets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            for (dst, _) in targets {
                let on_src: Vec<usize> = (0..tasks.len())
                    .filter(|&i| tasks[i].image.as_deref() == Some(src.as_str()) && !seen.contains(&(tasks[i].instance_id.clone(), dst.clone())))
                    .collect();
                if on_src.is_empty() {
                    break;
                }
                // On the target a task runs the target's test command (its plugins).
                let Some(on_dst) = tasks.iter().find(|t| t.image.as_deref() == Some(dst.as_str())).cloned() else { continue };
                let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(workers.max(1)));
                let mut set = tokio::task::JoinSet::new();
                for &i in &on_src {
                    let mut candidate = tasks[i].clone();
                    candidate.image = on_dst.image.clone();
                    candidate.test_cmd = on_dst.test_cmd.clone();
                    candidate.version = on_dst.version.clone();
                    let own = seconds.get(&candidate.instance_id).copied().unwrap_or(60.0);
                    let limit = std::time::Duration::from_secs_f64((4.0 * own).max(60.0)).min(opts.timeout);
                    let opts = ExecOptions { timeout: limit, ..opts.clone() };
                    let (rt, sem) = (rt.clone(), sem.clone());
                    set.spawn(async move {
                        let _permit = sem.acquire_owned().await.expect("semaphore open");
                        let v = crate::validate::validate_one(&rt, &candidate, &opts).await;
                        (i, candidate, v.ok)
                    });
                }
                while let Some(r) = set.join_next().await {
                    let (i, candidate, ok) = r.map_err(|e| crate::SweError::Invalid(format!("a pruning validation panicked: {e}")))?;
                    tried += 1;
                    seen.insert((candidate.instance_id.clone(), dst.clone()));
                    if ok {
                        tracing::info!(task = %candidate.instance_id, from = %src, to = %dst, "task moved to a shared image");
                        moves.push(Move { instance_id: candidate.instance_id.clone(), from: src.clone(), to: dst.clone() });
                        tasks[i] = candidate;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut report = ImageReport::measure(rt, &before, tasks).await?;
    report.moves = moves;
    report.moves_tried = tried;
    // Images no task uses any more.
    let kept: Vec<&str> = tasks.iter().filter_map(|t| t.image.as_deref()).collect();
    for t in &before {
        if let Some(img) = t.image.as_deref().filter(|i| !kept.contains(i)) {
            let _ = rt.docker().remove_image(img, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
        }
    }
    Ok(report)
}
