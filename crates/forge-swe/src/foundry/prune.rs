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
pub async fn prune(rt: &Runtime, tasks: &mut [TaskInstance], opts: &ExecOptions) -> Result<ImageReport> {
    let before = tasks.to_vec();
    let mut moves = Vec::new();
    let mut tried = 0usize;
    // (task, image) pairs already found not to validate: never tried twice.
    let mut failed: std::collections::BTreeSet<(String, String)> = Default::default();
    loop {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for t in tasks.iter() {
            if let Some(img) = &t.image {
                *count.entry(img.clone()).or_insert(0) += 1;
            }
        }
        if count.len() < 2 {
            break;
        }
        // Sources: the least-used image first; targets: the most-used first.
        let mut order: Vec<(String, usize)> = count.into_iter().collect();
        order.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut moved = false;
        'sources: for (src, _) in &order {
            for idx in 0..tasks.len() {
                if tasks[idx].image.as_deref() != Some(src) {
                    continue;
                }
                for (dst, _) in order.iter().rev().filter(|(d, _)| d != src) {
                    let key = (tasks[idx].instance_id.clone(), dst.clone());
                    if failed.contains(&key) {
                        continue;
                    }
                    // On the target the task runs the target's test command (its plugins).
                    let on_dst = tasks.iter().find(|t| t.image.as_deref() == Some(dst)).expect("a task uses every counted image");
                    let mut candidate = tasks[idx].clone();
                    candidate.image = Some(dst.clone());
                    candidate.test_cmd = on_dst.test_cmd.clone();
                    candidate.version = on_dst.version.clone();
                    tried += 1;
                    let v = crate::validate::validate_one(rt, &candidate, opts).await;
                    if v.ok {
                        tracing::info!(task = %candidate.instance_id, from = %src, to = %dst, "task moved to a shared image");
                        moves.push(Move { instance_id: candidate.instance_id.clone(), from: src.clone(), to: dst.clone() });
                        tasks[idx] = candidate;
                        moved = true;
                        break 'sources;
                    }
                    failed.insert(key);
                }
            }
        }
        if !moved {
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
