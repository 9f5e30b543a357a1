//! SWE-bench-compatible harness on the Docker sandbox: task instances in the SWE-bench schema
//! (parquet, JSONL, JSON), predictions, the seven log parsers SWE-bench Verified needs, grading
//! with the official swebench 4.1.0 semantics (and v5 behind an option), hardened execution in
//! fresh containers with the official output layout, re-grading, task validation, and a bundled
//! task set built into images offline.

#![allow(non_snake_case)]

pub mod bundled;
pub mod chat;
pub mod error;
pub mod foundry;
pub mod grading;
pub mod harness;
pub mod instance;
pub mod integrity;
pub mod labels;
pub mod layouts;
pub mod parsers;
pub mod resolve;
pub mod specs;
mod stdlib;
pub mod validate;

pub use error::{Result, SweError};
pub use grading::{grade, GradingVersion, InstanceReport, TestsStatus};
pub use harness::{
    agent_setup_script, ensure_bundled_images, eval_script, ContainerOverrides, regrade, run_evaluation, run_instance, run_instance_on_fleet, instance_image,
    EvalOptions, ExecOptions, InstanceResult, Outcome, ProgressFn, RunSummary,
};
pub use instance::{
    load_instances, load_instances_from, load_predictions, save_instances_jsonl, select_instances, Prediction, PredictionsSource,
    TaskInstance,
};
pub use parsers::{LogParser, StatusMap};
pub use specs::{official_eval_script, official_image, official_log_parser};
pub use validate::{validate_file, validate_tasks, TaskValidation};
