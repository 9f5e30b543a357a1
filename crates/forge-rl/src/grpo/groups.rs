//! From finished rollouts to what an update trains on: rollouts gather into groups (one instance,
//! `group_size` samples); a finished group loses its infrastructure failures and its stale samples
//! (never scored as 0), and what remains gets group-normalised advantages — or is skipped, and
//! counted, when it has fewer than two samples or all its rewards are equal.

use std::collections::BTreeMap;

use forge_agent::Trajectory;
use super::objective::{group_advantages, AdvantageNorm};

/// How a trajectory was scored.
#[derive(Debug, Clone, PartialEq)]
pub enum Reward {
    /// 1 iff the instance's FAIL_TO_PASS and PASS_TO_PASS tests pass with the patch.
    Scored(f32),
    /// The episode or its grading failed for reasons that are not the model's (container,
    /// image, engine): excluded from the update.
    InfrastructureFailure(String),
}

/// One finished sample of a group.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub group: u64,
    pub sample: usize,
    pub instance_id: String,
    /// The policy version when the episode started: steps whose update had been applied.
    pub policy_version: u64,
    pub trajectory: Trajectory,
    pub reward: Reward,
    /// Why grading scored the patch 0 without its tests deciding: the reward-integrity refusal
    /// (`patch refused: ...`, `suspected reward hack: ...`) or what the patched code did to the
    /// grading container (timeout, killed container, patch not applicable).
    pub grading_note: Option<String>,
    /// Seconds of the grading container (0 when nothing had to be graded).
    pub grading_seconds: f64,
    /// Seconds from the job's start to its result (episode and grading).
    pub wall_seconds: f64,
}

impl Rollout {
    pub fn score(&self) -> Option<f32> {
        match self.reward {
            Reward::Scored(r) => Some(r),
            Reward::InfrastructureFailure(_) => None,
        }
    }
}

/// Every sample of one instance's group.
#[derive(Debug, Clone)]
pub struct FinishedGroup {
    pub group: u64,
    pub instance_id: String,
    pub rollouts: Vec<Rollout>,
}

/// Collects rollouts, which finish in any order, into groups.
#[derive(Debug)]
pub struct GroupBuffer {
    group_size: usize,
    pending: BTreeMap<u64, Vec<Rollout>>,
}

impl GroupBuffer {
    pub fn new(group_size: usize) -> Self {
        Self { group_size, pending: BTreeMap::new() }
    }

    /// Adds a rollout; returns its group once all `group_size` samples are in.
    pub fn add(&mut self, rollout: Rollout) -> Option<FinishedGroup> {
        let group = rollout.group;
        let samples = self.pending.entry(group).or_default();
        samples.push(rollout);
        if samples.len() < self.group_size {
            return None;
        }
        let mut rollouts = self.pending.remove(&group).expect("just inserted");
        rollouts.sort_by_key(|r| r.sample);
        Some(FinishedGroup { group, instance_id: rollouts[0].instance_id.clone(), rollouts })
    }

    /// Groups with some samples still running.
    pub fn unfinished(&self) -> usize {
        self.pending.len()
    }
}

/// A sample chosen for the update, with its advantage.
#[derive(Debug, Clone)]
pub struct TrainSample<'a> {
    pub rollout: &'a Rollout,
    pub advantage: f32,
}

/// What became of a step's groups.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupCounts {
    pub groups: usize,
    /// Groups with a learning signal.
    pub used: usize,
    /// All remaining rewards equal: no signal under group normalisation.
    pub skipped_zero_variance: usize,
    /// Fewer than two samples left after the exclusions.
    pub skipped_too_few: usize,
    pub infrastructure_failures: usize,
    /// Samples older than the allowed policy lag.
    pub stale_samples: usize,
}

/// Chooses the samples of `groups` to train on at weights version `version` and their
/// advantages.
pub fn select_samples<'a>(groups: &'a [FinishedGroup], version: u64, max_policy_lag: u64, norm: AdvantageNorm, eps: f64) -> (Vec<TrainSample<'a>>, GroupCounts) {
    let mut counts = GroupCounts { groups: groups.len(), ..GroupCounts::default() };
    let mut samples = Vec::new();
    for group in groups {
        let mut kept = Vec::new();
        for rollout in &group.rollouts {
            match rollout.score() {
                None => counts.infrastructure_failures += 1,
                Some(_) if version.saturating_sub(rollout.policy_version) > max_policy_lag => counts.stale_samples += 1,
                Some(reward) => kept.push((rollout, reward)),
            }
        }
        if kept.len() < 2 {
            counts.skipped_too_few += 1;
            continue;
        }
        let rewards: Vec<f32> = kept.iter().map(|(_, r)| *r).collect();
        match group_advantages(&rewards, norm, eps) {
            None => counts.skipped_zero_variance += 1,
            Some(advantages) => {
                counts.used += 1;
                samples.extend(kept.iter().zip(advantages).map(|((rollout, _), advantage)| TrainSample { rollout, advantage }));
            }
        }
    }
    (samples, counts)
}

#[cfg(test)]
mod tests {
    use forge_agent::Status;

    use super::*;

    fn rollout(group: u64, sample: usize, version: u64, reward: Option<f32>) -> Rollout {
        let mut trajectory = Trajectory::start(&format!("task-{group}"), Vec::new(), Vec::new());
        trajectory.status = if reward.is_some() { Status::Finished } else { Status::InfraError };
        Rollout {
            group,
            sample,
            instance_id: format!("task-{group}"),
            policy_version: version,
            trajectory,
            reward: reward.map_or_else(|| Reward::InfrastructureFailure("container failure".into()), Reward::Scored),
            grading_note: None,
            grading_seconds: 0.0,
            wall_seconds: 0.0,
        }
    }

    fn group(id: u64, rewards: &[Option<f32>]) -> FinishedGroup {
        let mut buffer = GroupBuffer::new(rewards.len());
        let mut finished = None;
        // added out of order: groups finish in whatever order their episodes end
        for (sample, reward) in rewards.iter().enumerate().rev() {
            finished = buffer.add(rollout(id, sample, 0, *reward));
        }
        finished.expect("the last sample finishes the group")
    }

    #[test]
    fn a_group_finishes_when_all_its_samples_are_in_whatever_their_order() {
        let mut buffer = GroupBuffer::new(3);
        assert!(buffer.add(rollout(7, 2, 0, Some(1.0))).is_none());
        assert!(buffer.add(rollout(8, 0, 0, Some(0.0))).is_none());
        assert!(buffer.add(rollout(7, 0, 0, Some(0.0))).is_none());
        assert_eq!(buffer.unfinished(), 2);
        let done = buffer.add(rollout(7, 1, 0, Some(0.0))).expect("group 7 is complete");
        assert_eq!(done.group, 7);
        assert_eq!(done.rollouts.iter().map(|r| r.sample).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(buffer.unfinished(), 1);
    }

    #[test]
    fn zero_variance_groups_are_skipped_and_counted() {
        let groups = [group(0, &[Some(1.0); 4]), group(1, &[Some(0.0); 4]), group(2, &[Some(1.0), Some(0.0), Some(0.0), Some(0.0)])];
        let (samples, counts) = select_samples(&groups, 0, 1, AdvantageNorm::MeanStd, 1e-4);
        assert_eq!(counts, GroupCounts { groups: 3, used: 1, skipped_zero_variance: 2, ..GroupCounts::default() });
        assert_eq!(samples.len(), 4);
        assert!(samples.iter().all(|s| s.rollout.group == 2));
        // mean 0.25, Bessel std 0.5: (1 − 0.25) / 0.5 = 1.5, (0 − 0.25) / 0.5 = −0.5
        let advantages: Vec<f32> = samples.iter().map(|s| s.advantage).collect();
        for (got, want) in advantages.iter().zip([1.5, -0.5, -0.5, -0.5]) {
            assert!((got - want).abs() < 1e-3, "{advantages:?}");
        }
    }

    #[test]
    fn infrastructure_failures_are_excluded_not_scored_as_zero() {
        // scored as 0, the failure would make a 1/0/0/0 group; excluded, the group is 1/0/0
        let groups = [group(0, &[Some(1.0), None, Some(0.0), Some(0.0)])];
        let (samples, counts) = select_samples(&groups, 0, 1, AdvantageNorm::Mean, 0.0);
        assert_eq!(counts.infrastructure_failures, 1);
        assert_eq!(counts.used, 1);
        let by_sample: Vec<(usize, f32)> = samples.iter().map(|s| (s.rollout.sample, s.advantage)).collect();
        assert_eq!(by_sample.len(), 3);
        assert!(by_sample.iter().all(|(sample, _)| *sample != 1), "the failed sample is not trained on");
        assert!((by_sample[0].1 - 2.0 / 3.0).abs() < 1e-6, "{by_sample:?}");
        // a group left with one sample has nothing to compare it with
        let lonely = [group(1, &[None, Some(1.0), None])];
        let (samples, counts) = select_samples(&lonely, 0, 1, AdvantageNorm::Mean, 0.0);
        assert!(samples.is_empty());
        assert_eq!((counts.skipped_too_few, counts.infrastructure_failures), (1, 2));
    }

    #[test]
    fn samples_beyond_the_policy_lag_are_left_out_and_counted() {
        let mut g = group(0, &[Some(1.0), Some(0.0), Some(0.0)]);
        g.rollouts[0].policy_version = 3;
        g.rollouts[1].policy_version = 1;
        g.rollouts[2].policy_version = 3;
        // at version 4 with lag ≤ 1, sample 1 (version 1) is 3 updates old
        let (samples, counts) = select_samples(std::slice::from_ref(&g), 4, 1, AdvantageNorm::Mean, 0.0);
        assert_eq!(counts.stale_samples, 1);
        assert_eq!(samples.iter().map(|s| s.rollout.sample).collect::<Vec<_>>(), [0, 2]);
        let (_, counts) = select_samples(std::slice::from_ref(&g), 4, 3, AdvantageNorm::Mean, 0.0);
        assert_eq!(counts.stale_samples, 0);
    }
}
