//! Task instances in the SWE-bench schema and model predictions, from parquet, JSONL or JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{Result, SweError};

/// One task instance (SWE-bench schema). Fields this crate does not know are kept in `extra`
/// so that a load/save round trip loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInstance {
    pub repo: String,
    pub instance_id: String,
    pub base_commit: String,
    /// The gold patch (source changes only).
    #[serde(default)]
    pub patch: String,
    /// The test patch (tests that check the fix).
    #[serde(default)]
    pub test_patch: String,
    #[serde(default)]
    pub problem_statement: String,
    #[serde(default, deserialize_with = "null_to_default")]
    pub hints_text: String,
    #[serde(default, deserialize_with = "null_to_default")]
    pub created_at: String,
    #[serde(default, deserialize_with = "null_to_default")]
    pub version: String,
    #[serde(rename = "FAIL_TO_PASS", deserialize_with = "test_list")]
    pub fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS", deserialize_with = "test_list")]
    pub pass_to_pass: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_setup_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<String>,
    /// Parser behaviour (`pytest`, `django`, ...); chosen by repo when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_parser: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_type: Option<String>,
    /// A complete eval script (official datasets carry one); used when `test_cmd` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_script: Option<String>,
    /// Docker image holding the repository at `/testbed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extension: the test command (run in `/testbed`, test files appended). When present the
    /// harness writes its own hardened eval script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_cmd: Option<String>,
    /// Bash every shell of the task runs first: the environment the repository's code runs in
    /// (`source /opt/miniconda3/bin/activate && conda activate testbed` in SWE-bench-style
    /// images, whose environment is otherwise activated only from `/root/.bashrc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_init: Option<String>,
    /// The ref checked out before work starts. `HEAD`: the image already holds the start state
    /// (official images, whose HEAD may be a commit on top of `base_commit` that records the
    /// install). SWE-smith: the bug branch. Absent: `base_commit` for `test_cmd` tasks (images
    /// shared by several tasks), `HEAD` otherwise. See [`TaskInstance::start_ref`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ref: Option<String>,
    /// A ref holding benchmark test files that the start state lacks (SWE-smith removes the
    /// failing tests in the bug branch's last commit): every file that differs between the start
    /// and this ref is checked out from it before the tests run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_ref: Option<String>,
    /// Where the record came from (`swebench`, `swe-gym`, `swe-smith`, `r2e-gym`,
    /// `swe-rebench`; absent: forge's own schema), set by [`crate::resolve`]: picks per-source
    /// defaults (network and resources of eval containers) and the fix an error suggests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Fields of the record this crate does not interpret.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn null_to_default<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// FAIL_TO_PASS / PASS_TO_PASS: a JSON-encoded string list (the HF datasets) or a list.
fn test_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.trim().is_empty() => Ok(Vec::new()),
        Value::String(s) => serde_json::from_str::<Vec<String>>(&s)
            .map_err(|e| D::Error::custom(format!("not a JSON-encoded list of test names: {e}"))),
        v @ Value::Array(_) => serde_json::from_value(v).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "expected a list of test names or a JSON string of one, got {other}"
        ))),
    }
}

impl TaskInstance {
    /// Files touched by the test patch (`diff --git a/X b/X` headers), in order.
    pub fn test_files(&self) -> Vec<String> {
        patch_files(&self.test_patch)
    }

    /// The ref a fresh container checks out before work starts (see [`TaskInstance::start_ref`]).
    pub fn start_ref(&self) -> &str {
        match (&self.start_ref, &self.test_cmd) {
            (Some(r), _) => r,
            (None, Some(_)) => &self.base_commit,
            (None, None) => "HEAD",
        }
    }
}

/// Files named by the `diff --git a/X b/X` headers of a unified diff (the b side; the a side
/// for deletions), deduplicated, in order.
pub fn patch_files(patch: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in patch.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            // "a/path b/path"; paths with spaces are rare in our data: split at " b/".
            let file = match rest.rfind(" b/") {
                Some(i) => rest[i + 3..].to_string(),
                None => continue,
            };
            if !out.contains(&file) {
                out.push(file);
            }
        }
    }
    out
}

/// Instance ids name directories of the output layout (`logs/run_evaluation/{run}/{model}/{id}`):
/// an id that is not a plain file name could write outside it or collide with another.
pub fn check_instance_id(id: &str) -> std::result::Result<(), String> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id.starts_with('-')
        || id.chars().any(|c| c == '/' || c == '\\' || c.is_control())
        || id.len() > 200;
    if bad {
        return Err(format!(
            "instance_id {id:?} is not a safe file name (it names the instance's log directory): use letters, digits, `_`, `-` and `.`, no `/`, at most 200 bytes"
        ));
    }
    Ok(())
}

/// `instances` restricted to `ids` (all of them when `ids` is empty), in dataset order. An id the
/// dataset lacks is returned as the error, for the caller to name its source (flag or config key).
pub fn select_instances(mut instances: Vec<TaskInstance>, ids: &[String]) -> std::result::Result<Vec<TaskInstance>, String> {
    if let Some(unknown) = ids.iter().find(|id| !instances.iter().any(|i| &&i.instance_id == id)) {
        return Err(unknown.clone());
    }
    if !ids.is_empty() {
        instances.retain(|i| ids.contains(&i.instance_id));
    }
    Ok(instances)
}

/// Loads instances from `.parquet`, `.jsonl` or `.json` (a list, or an object keyed by id),
/// each record resolved from the dataset it comes from, told by its fields
/// ([`crate::resolve::detect`]).
pub fn load_instances(path: &Path) -> Result<Vec<TaskInstance>> {
    load_instances_from(path, None)
}

/// [`load_instances`] with every record read as one `source`'s (`None`: told per record).
pub fn load_instances_from(path: &Path, source: Option<crate::resolve::Source>) -> Result<Vec<TaskInstance>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let records: Vec<(usize, Value)> = match ext.as_str() {
        "parquet" => read_parquet(path)?,
        _ => read_json_records(path)?,
    };
    let mut out = Vec::with_capacity(records.len());
    let mut seen = std::collections::HashSet::new();
    for (line, v) in records {
        let inst = crate::resolve::resolve_record(v, source).map_err(|detail| SweError::BadRecord {
            path: path.to_path_buf(),
            line,
            detail,
        })?;
        if let Err(why) = check_instance_id(&inst.instance_id) {
            return Err(SweError::BadRecord { path: path.to_path_buf(), line, detail: why });
        }
        if !seen.insert(inst.instance_id.clone()) {
            return Err(SweError::BadRecord {
                path: path.to_path_buf(),
                line,
                detail: format!("duplicate instance_id {}", inst.instance_id),
            });
        }
        out.push(inst);
    }
    Ok(out)
}

/// Writes instances as JSONL (test lists as JSON lists).
pub fn save_instances_jsonl(path: &Path, instances: &[TaskInstance]) -> Result<()> {
    let mut s = String::new();
    for i in instances {
        s.push_str(&serde_json::to_string(i).expect("instances serialize"));
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| SweError::io(path, e))
}

/// Reads JSONL (one object per line, blank lines skipped), a JSON list, or a JSON object whose
/// values are records (keyed by instance id; the key fills a missing `instance_id`).
/// Returns (line or index, record).
fn read_json_records(path: &Path) -> Result<Vec<(usize, Value)>> {
    let bytes = std::fs::read(path).map_err(|e| SweError::io(path, e))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
            return Err(SweError::BadRecord {
                path: path.to_path_buf(),
                line,
                detail: format!("invalid UTF-8 at byte {at}; re-save the file as UTF-8"),
            });
        }
    };
    // A UTF-8 byte-order mark (editors on Windows write one) is not part of the JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_string();
    let trimmed = text.trim_start();
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    if !jsonl && (trimmed.starts_with('[') || trimmed.starts_with('{')) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            return match v {
                Value::Array(items) => Ok(items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i + 1, v))
                    .collect()),
                Value::Object(map) => {
                    // A single record (has instance_id) or a dict keyed by id.
                    if map.contains_key("instance_id") && !map.values().all(Value::is_object) {
                        return Ok(vec![(1, Value::Object(map))]);
                    }
                    let mut out = Vec::new();
                    for (i, (k, mut v)) in map.into_iter().enumerate() {
                        match v.as_object_mut() {
                            Some(o) => {
                                o.entry("instance_id").or_insert(Value::String(k));
                            }
                            None => {
                                return Err(SweError::BadRecord {
                                    path: path.to_path_buf(),
                                    line: i + 1,
                                    detail: format!("value of key {k:?} is not an object"),
                                })
                            }
                        }
                        out.push((i + 1, v));
                    }
                    Ok(out)
                }
                _ => Err(SweError::BadFile {
                    path: path.to_path_buf(),
                    detail: "expected a JSON list or object of records".into(),
                }),
            };
        }
        // Not one JSON document: fall through to JSONL (which names the bad line).
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| SweError::BadRecord {
            path: path.to_path_buf(),
            line: i + 1,
            detail: format!("not a JSON object: {e}"),
        })?;
        if !v.is_object() {
            return Err(SweError::BadRecord {
                path: path.to_path_buf(),
                line: i + 1,
                detail: "expected a JSON object per line".into(),
            });
        }
        out.push((i + 1, v));
    }
    Ok(out)
}

fn read_parquet(path: &Path) -> Result<Vec<(usize, Value)>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bad = |detail: String| SweError::BadFile {
        path: path.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|e| SweError::io(path, e))?;
    let reader =
        SerializedFileReader::new(file).map_err(|e| bad(format!("not a parquet file: {e}")))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| bad(format!("cannot read rows: {e}")))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| SweError::BadRecord {
            path: path.to_path_buf(),
            line: i + 1,
            detail: format!("unreadable parquet row: {e}"),
        })?;
        let mut obj = serde_json::Map::new();
        for (name, field) in row.get_column_iter() {
            obj.insert(name.clone(), field_to_json(field));
        }
        out.push((i + 1, Value::Object(obj)));
    }
    Ok(out)
}

/// One prediction (official field names). `model_patch: None` is a missing patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub instance_id: String,
    #[serde(default)]
    pub model_name_or_path: String,
    #[serde(default)]
    pub model_patch: Option<String>,
}

/// Where predictions come from.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictionsSource {
    /// The gold patch of every instance (model name `gold`).
    Gold,
    File(PathBuf),
}

impl PredictionsSource {
    /// `"gold"` or a path.
    pub fn parse(s: &str) -> Self {
        if s == "gold" {
            PredictionsSource::Gold
        } else {
            PredictionsSource::File(PathBuf::from(s))
        }
    }
}

/// Predictions keyed by instance id.
pub fn load_predictions(
    src: &PredictionsSource,
    instances: &[TaskInstance],
) -> Result<BTreeMap<String, Prediction>> {
    match src {
        PredictionsSource::Gold => Ok(instances
            .iter()
            .map(|i| {
                (
                    i.instance_id.clone(),
                    Prediction {
                        instance_id: i.instance_id.clone(),
                        model_name_or_path: "gold".into(),
                        model_patch: Some(i.patch.clone()),
                    },
                )
            })
            .collect()),
        PredictionsSource::File(path) => {
            let records = read_json_records(path)?;
            let mut out = BTreeMap::new();
            for (line, v) in records {
                let p: Prediction = serde_json::from_value(v).map_err(|e| SweError::BadRecord {
                    path: path.clone(),
                    line,
                    detail: format!(
                        "not a prediction {{instance_id, model_name_or_path, model_patch}}: {e}"
                    ),
                })?;
                if out.insert(p.instance_id.clone(), p).is_some() {
                    return Err(SweError::BadRecord {
                        path: path.clone(),
                        line,
                        detail: "duplicate instance_id".into(),
                    });
                }
            }
            Ok(out)
        }
    }
}

fn field_to_json(f: &parquet::record::Field) -> Value {
    use parquet::record::Field;
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => Value::from(*v),
        Field::Short(v) => Value::from(*v),
        Field::Int(v) => Value::from(*v),
        Field::Long(v) => Value::from(*v),
        Field::UByte(v) => Value::from(*v),
        Field::UShort(v) => Value::from(*v),
        Field::UInt(v) => Value::from(*v),
        Field::ULong(v) => Value::from(*v),
        Field::Float(v) => Value::from(*v),
        Field::Double(v) => Value::from(*v),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(String::from_utf8_lossy(b.data()).to_string()),
        Field::ListInternal(l) => Value::Array((0..l.len()).map(|i| list_elem(l, i)).collect()),
        other => Value::String(other.to_string()),
    }
}

fn list_elem(l: &parquet::record::List, i: usize) -> Value {
    use parquet::record::ListAccessor;
    match l.get_string(i) {
        Ok(s) => Value::String(s.clone()),
        Err(_) => l
            .elements()
            .get(i)
            .map(field_to_json)
            .unwrap_or(Value::Null),
    }
}
