//! Recipe configs: TOML file → `--set a.b=c` overrides → typed struct that rejects unknown keys
//! → the typed struct serialised back, every default filled in: that resolved TOML is what a run
//! directory records (`config.toml`) and `--print-config` shows. The sections every recipe shares
//! (`[model]`, `[optim]`, `[run]`; `[lora]` is [`forge_model::LoraConfig`]) live here.

use std::path::{Path, PathBuf};

use candle_core::DType;
use forge_model::device::DeviceSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{AdamWConfig, LrSchedule, Result, TrainError};

/// The dtype weights are held and trained in (bf16 keeps f32 master weights in the optimizer
/// unless `optim.pure_bf16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
}

impl From<Dtype> for DType {
    fn from(dtype: Dtype) -> DType {
        match dtype {
            Dtype::F32 => DType::F32,
            Dtype::Bf16 => DType::BF16,
        }
    }
}

/// `[model]`: either `path` (an HF model directory or `org/name[@revision]` hub id, downloaded
/// into the Hugging Face cache when missing) or `init_config` + `tokenizer` (a random
/// initialisation, for tests and demos; SFT only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_config: Option<PathBuf>,
    /// Tokenizer and chat template (default: `path`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Standard deviation and seed of a random initialisation (`init_config`).
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    #[serde(default)]
    pub init_seed: u64,
    #[serde(default)]
    pub dtype: Dtype,
    /// Where the model trains (and generates): "cpu", "cuda" or "cuda:N".
    #[serde(default)]
    pub device: DeviceSpec,
    /// Replaces the model's `rope_scaling` (as config.json writes it), e.g. Qwen3's YaRN to 64K:
    /// `{ rope_type = "yarn", factor = 2.0, original_max_position_embeddings = 32768 }`. The
    /// trained model's config.json records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Map<String, serde_json::Value>>,
}

fn default_init_std() -> f64 {
    0.02
}

impl ModelSection {
    /// Exactly one source: a pretrained `path` or a random `init_config` (with a `tokenizer`).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        match (&self.path, &self.init_config) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return bad("set exactly one of model.path (fine-tune a model) and model.init_config (random init)"),
        }
        if self.init_config.is_some() && self.tokenizer.is_none() {
            return bad("model.init_config needs model.tokenizer (a directory with tokenizer.json and a chat template)");
        }
        Ok(())
    }

    /// `path` as a local model directory (downloading a hub id when missing); `None` for a
    /// random initialisation.
    pub fn pretrained_dir(&self) -> Result<Option<PathBuf>> {
        self.path.as_deref().map(forge_model::weights::resolve_model_dir).transpose().map_err(Into::into)
    }

    /// Where the tokenizer and chat template come from: `tokenizer`, else the model directory.
    pub fn tokenizer_dir(&self) -> Result<PathBuf> {
        match &self.tokenizer {
            Some(dir) => Ok(dir.clone()),
            None => self.pretrained_dir()?.ok_or_else(|| TrainError::Config("no tokenizer: set model.tokenizer".into())),
        }
    }

    /// The model's architecture (with `rope_scaling`), without its weights: `path`'s config.json
    /// (a hub id's from the hub cache, else for a Qwen3 release its published architecture, else
    /// downloaded) or `init_config`.
    pub fn architecture(&self) -> Result<forge_model::Config> {
        let config = match (&self.path, &self.init_config) {
            (Some(path), _) => match forge_model::weights::HubModelId::parse(path).filter(|_| !Path::new(path).is_dir()) {
                Some(id) => match forge_model::weights::cached_hub_config(&id, &forge_model::weights::HubSettings::from_env().cache_dir) {
                    Some(cached) => forge_model::Config::from_file(&cached)?,
                    None => match forge_model::Config::qwen3_hub_release(&id.repo) {
                        Some(release) => release,
                        None => forge_model::Config::from_file(&forge_model::weights::resolve_model_dir(path)?.join("config.json"))?,
                    },
                },
                None if !Path::new(path).is_dir() => {
                    return Err(TrainError::Config(format!(
                        "model.path `{path}` does not exist (yet: an earlier run's model/?); to plan without it, set model.path to the model it starts from, e.g. --set model.path=Qwen/Qwen3-8B"
                    )))
                }
                None => forge_model::Config::from_file(&Path::new(path).join("config.json"))?,
            },
            (None, Some(init)) => forge_model::Config::from_file(init)?,
            (None, None) => return Err(TrainError::Config("no model: set model.path or model.init_config".into())),
        };
        self.with_rope_scaling(config)
    }

    /// `config` with `rope_scaling` in place of its own, when set.
    pub fn with_rope_scaling(&self, config: forge_model::Config) -> Result<forge_model::Config> {
        match &self.rope_scaling {
            Some(scaling) => config.with_rope_scaling(scaling).map_err(|e| TrainError::Config(format!("model.rope_scaling: {e}"))),
            None => Ok(config),
        }
    }
}

/// `[optim]`: AdamW and its learning-rate schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    pub max_grad_norm: Option<f64>,
    /// "cosine", "linear" or "constant" (after linear warmup).
    pub schedule: String,
    pub warmup_steps: u64,
    #[serde(default)]
    pub min_lr_ratio: f64,
    #[serde(default)]
    pub pure_bf16: bool,
}

impl OptimSection {
    /// The optimizer these settings describe.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.betas[0],
            beta2: self.betas[1],
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            pure_bf16: self.pure_bf16,
        }
    }

    /// The learning-rate schedule over `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: u64) -> Result<LrSchedule> {
        let (lr, warmup) = (self.lr, self.warmup_steps);
        let schedule = match self.schedule.as_str() {
            "cosine" => LrSchedule::cosine(lr, warmup, total_steps),
            "linear" => LrSchedule::linear(lr, warmup, total_steps),
            "constant" => LrSchedule::constant(lr, warmup),
            other => return Err(TrainError::Config(format!("optim.schedule \"{other}\": use cosine, linear or constant"))),
        }
        .with_min_lr_ratio(self.min_lr_ratio);
        schedule.validate()?;
        Ok(schedule)
    }
}

/// `[run]`: where the run lives and how often it checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub dir: PathBuf,
    pub checkpoint_every: u64,
    pub keep_last: usize,
}

impl RunSection {
    pub fn validate(&self) -> Result<()> {
        if self.checkpoint_every == 0 || self.keep_last == 0 {
            return Err(TrainError::Config("run.checkpoint_every and run.keep_last must be positive".into()));
        }
        Ok(())
    }
}

/// `#[serde(default = "forge_train::config::default_true")]`: a switch that is on unless turned off.
pub fn default_true() -> bool {
    true
}

/// Reads `path`, applies `overrides` (`a.b=c`, the value parsed as TOML, else taken as a string)
/// and deserialises; returns the typed config and its resolved TOML: the typed config
/// serialised, so every default is written out.
pub fn load_config<T: DeserializeOwned + Serialize>(path: &Path, overrides: &[String]) -> Result<(T, String)> {
    let text = crate::text::read_text(path)?;
    let mut value: toml::Table =
        toml::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    for item in overrides {
        apply_override(&mut value, item)?;
    }
    let resolved = toml::to_string_pretty(&value).map_err(|e| TrainError::Config(e.to_string()))?;
    let typed: T = toml::from_str(&resolved).map_err(|e| TrainError::Config(format!("{} (after overrides): {e}", path.display())))?;
    let resolved = toml::to_string_pretty(&typed).map_err(|e| TrainError::Config(format!("{}: the resolved config does not serialise: {e}", path.display())))?;
    Ok((typed, resolved))
}

fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("override `{item}` must look like section.key=value")))?;
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, sections) = parts.split_last().expect("split yields at least one part");
    let mut current = table;
    for section in sections {
        let entry = current.entry(section.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("override `{item}`: `{section}` is not a section")))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        train: Train,
    }
    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Train {
        lr: f64,
        name: String,
        steps: u64,
        #[serde(default = "default_true")]
        shuffle: bool,
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[train]\nlr = 0.1\nname = \"a\"\nsteps = 3\n").unwrap();
        let (c, resolved): (Demo, String) = load_config(&path, &["train.lr=0.5".into(), "train.name=run two".into()]).unwrap();
        assert_eq!(c.train, Train { lr: 0.5, name: "run two".into(), steps: 3, shuffle: true });
        assert!(resolved.contains("lr = 0.5"));
        assert!(resolved.contains("shuffle = true"), "defaults are written out: {resolved}");
        let err = load_config::<Demo>(&path, &["train.typo=1".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown field `typo`"), "{err}");
        let err = load_config::<Demo>(&path, &["nonsense".into()]).unwrap_err().to_string();
        assert!(err.contains("section.key=value"), "{err}");
    }
}
