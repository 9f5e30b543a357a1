//! Grading: eval log → status map → report, with the official SWE-bench 4.1.0 semantics by
//! default and the newer (v5) semantics behind [`GradingVersion::V5`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::TaskInstance;
use crate::parsers::{LogParser, StatusMap};

pub const START_TEST_OUTPUT: &str = ">>>>> Start Test Output";
pub const END_TEST_OUTPUT: &str = ">>>>> End Test Output";
pub const APPLY_PATCH_FAIL: &str = ">>>>> Patch Apply Failed";
pub const APPLY_PATCH_PASS: &str = ">>>>> Applied Patch";
pub const RESET_FAILED: &str = ">>>>> Reset Failed";
pub const TESTS_ERROR: &str = ">>>>> Tests Errored";
pub const TESTS_TIMEOUT: &str = ">>>>> Tests Timed Out";
/// Written by the HOST after the eval script ended (never by code in the container); the last
/// occurrence in a log is the one that counts.
pub const TEST_EXIT_CODE: &str = ">>>>> Test Exit Code:";

/// Which grading semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradingVersion {
    /// swebench 4.1.0: PASSED/XFAIL pass, FAILED/ERROR/absent fail, SKIPPED counts for neither.
    #[default]
    V4,
    /// Newer semantics: truncated parametrized ids match by prefix; SKIPPED fails FAIL_TO_PASS
    /// and passes PASS_TO_PASS; a non-zero test exit code without any failure in the log, or a
    /// log without any test result, is "not found".
    V5,
}

impl std::str::FromStr for GradingVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v4" | "4" | "4.1" | "4.1.0" => Ok(GradingVersion::V4),
            "v5" | "5" => Ok(GradingVersion::V5),
            other => Err(format!("unknown grading version {other:?}; use v4 or v5")),
        }
    }
}

/// `{success, failure}` of one test category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SuccessFailure {
    pub success: Vec<String>,
    pub failure: Vec<String>,
}

/// The `tests_status` object of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestsStatus {
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: SuccessFailure,
    #[serde(rename = "PASS_TO_PASS")]
    pub pass_to_pass: SuccessFailure,
    #[serde(rename = "FAIL_TO_FAIL")]
    pub fail_to_fail: SuccessFailure,
    #[serde(rename = "PASS_TO_FAIL")]
    pub pass_to_fail: SuccessFailure,
}

/// One instance's entry of `report.json` (official field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub patch_is_None: bool,
    pub patch_exists: bool,
    pub patch_successfully_applied: bool,
    pub resolved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_status: Option<TestsStatus>,
    /// Set when the patch was not graded because it would change how the tests run
    /// ([`crate::integrity`]): scored 0 with this reason (forge's addition to the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl InstanceReport {
    /// The report of a patch refused by [`crate::integrity`] (before or after it was applied).
    pub fn refused(reason: String, applied: bool) -> Self {
        InstanceReport {
            patch_exists: true,
            patch_successfully_applied: applied,
            refused: Some(reason),
            ..Default::default()
        }
    }

    /// Whether the refusal was for suspected in-process tampering (counted in metrics).
    pub fn suspected_reward_hack(&self) -> bool {
        self.refused.as_deref().is_some_and(|r| r.starts_with(crate::integrity::SUSPECTED_REWARD_HACK))
    }
}

/// The test region of a log, or `None` when a bad code is present or a marker is missing
/// (official `get_logs_eval`: the patch "did not apply").
pub fn test_region(log: &str) -> Option<&str> {
    if [APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT]
        .iter()
        .any(|c| log.contains(c))
    {
        return None;
    }
    let start = log.find(START_TEST_OUTPUT)?;
    let after = &log[start + START_TEST_OUTPUT.len()..];
    // Official: `split(START)[1]` ends at a second start marker, if any.
    let after = match after.find(START_TEST_OUTPUT) {
        Some(i) => &after[..i],
        None => after,
    };
    // Official: both markers must occur somewhere; the region ends at the first end marker
    // after the start marker (or runs to the end of the log).
    if !log.contains(END_TEST_OUTPUT) {
        return None;
    }
    Some(match after.find(END_TEST_OUTPUT) {
        Some(end) => &after[..end],
        None => after,
    })
}

/// The test exit code the host recorded, if any (last occurrence).
pub fn recorded_exit_code(log: &str) -> Option<i64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(TEST_EXIT_CODE))
        .and_then(|r| r.trim().parse().ok())
}

/// Parses a log: `(status map, found)`; `found == false` means "patch not applied / no usable
/// log" (the report then has `patch_successfully_applied: false`).
pub fn logs_eval(log: &str, parser: LogParser, version: GradingVersion) -> (StatusMap, bool) {
    let Some(region) = test_region(log) else {
        return (StatusMap::new(), false);
    };
    // As the official harness: when nothing parses between the markers (test output that went
    // elsewhere), the whole log is parsed.
    let mut map = parser.parse(region);
    if map.is_empty() {
        map = parser.parse(log);
    }
    if version == GradingVersion::V5 {
        if map.is_empty() {
            return (map, false);
        }
        let any_failure = map
            .values()
            .any(|s| s.starts_with("FAILED") || s.starts_with("ERROR"));
        if recorded_exit_code(log).is_some_and(|c| c != 0) && !any_failure {
            return (StatusMap::new(), false);
        }
    }
    (map, true)
}

/// The status of `case`; under v5 a truncated parametrized id (or a log id truncated at a space)
/// matches by prefix, the worst status of the matches winning.
fn lookup<'a>(case: &str, sm: &'a StatusMap, version: GradingVersion) -> Option<&'a str> {
    if let Some(s) = sm.get(case) {
        return Some(s.as_str());
    }
    if version != GradingVersion::V5 || !case.contains('[') {
        return None;
    }
    let matches: Vec<&str> = sm
        .iter()
        .filter(|(k, _)| k.contains('[') && (k.starts_with(case) || case.starts_with(k.as_str())))
        .map(|(_, v)| v.as_str())
        .collect();
    if matches.is_empty() {
        return None;
    }
    let rank = |s: &str| match s {
        "FAILED" | "ERROR" => 0,
        "SKIPPED" => 1,
        _ => 2,
    };
    matches.into_iter().min_by_key(|s| rank(s))
}

fn is_pass(s: Option<&str>) -> bool {
    matches!(s, Some("PASSED") | Some("XFAIL"))
}
fn is_fail(s: Option<&str>) -> bool {
    matches!(s, None | Some("FAILED") | Some("ERROR"))
}

/// Official `get_eval_tests_report` (pass-and-fail or fail-only evaluation).
pub fn tests_report(
    sm: &StatusMap,
    f2p: &[String],
    p2p: &[String],
    fail_only: bool,
    version: GradingVersion,
) -> TestsStatus {
    let check = |cases: &[String], maintain: bool| {
        let mut sf = SuccessFailure::default();
        for c in cases {
            let st = lookup(c, sm, version);
            if fail_only {
                if st == Some("FAILED") {
                    sf.failure.push(c.clone());
                } else {
                    sf.success.push(c.clone());
                }
                continue;
            }
            let skipped = st == Some("SKIPPED");
            if is_pass(st) || (version == GradingVersion::V5 && maintain && skipped) {
                sf.success.push(c.clone());
            } else if is_fail(st) || (version == GradingVersion::V5 && skipped) {
                sf.failure.push(c.clone());
            }
            // v4: SKIPPED is neither.
        }
        sf
    };
    TestsStatus {
        fail_to_pass: check(f2p, false),
        pass_to_pass: check(p2p, true),
        ..Default::default()
    }
}

fn rate(sf: &SuccessFailure) -> f64 {
    let total = sf.success.len() + sf.failure.len();
    if total == 0 {
        1.0
    } else {
        sf.success.len() as f64 / total as f64
    }
}

/// FULL / PARTIAL / NO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResolvedStatus {
    Full,
    Partial,
    No,
}

pub fn resolution_status(ts: &TestsStatus) -> ResolvedStatus {
    let (f, p) = (rate(&ts.fail_to_pass), rate(&ts.pass_to_pass));
    if f == 1.0 && p == 1.0 {
        ResolvedStatus::Full
    } else if f < 1.0 && f > 0.0 && p == 1.0 {
        ResolvedStatus::Partial
    } else {
        ResolvedStatus::No
    }
}

/// Grades one log against an instance (official `get_eval_report`). `patch` is the model patch
/// (`None`: no prediction).
pub fn grade(
    inst: &TaskInstance,
    patch: Option<&str>,
    log: &str,
    version: GradingVersion,
) -> InstanceReport {
    let mut r = InstanceReport::default();
    if patch.is_none() {
        r.patch_is_None = true;
        return r;
    }
    r.patch_exists = true;
    let parser = LogParser::for_instance(inst.log_parser.as_deref(), &inst.repo);
    let (sm, found) = logs_eval(log, parser, version);
    if !found {
        return r;
    }
    r.patch_successfully_applied = true;
    let fail_only = inst
        .eval_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("fail_only"));
    let ts = tests_report(
        &sm,
        &inst.fail_to_pass,
        &inst.pass_to_pass,
        fail_only,
        version,
    );
    r.resolved = resolution_status(&ts) == ResolvedStatus::Full;
    r.tests_status = Some(ts);
    r
}

/// `report.json` content: `{instance_id: report}`.
pub fn report_json(instance_id: &str, r: &InstanceReport) -> serde_json::Value {
    let mut m = BTreeMap::new();
    m.insert(instance_id.to_string(), r);
    serde_json::to_value(m).expect("report serializes")
}
