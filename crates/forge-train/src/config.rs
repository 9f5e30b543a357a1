//! Recipe configs: TOML file → `--set a.b=c` overrides → typed struct that rejects unknown keys.
//! The resolved TOML is what a run directory records and `--print-config` shows.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Result, TrainError};

/// `#[serde(default = "forge_train::config::default_true")]`: a switch that is on unless turned off.
pub fn default_true() -> bool {
    true
}

/// Reads `path`, applies `overrides` (`a.b=c`, the value parsed as TOML, else taken as a string)
/// and deserialises; returns the typed config and its resolved TOML text.
pub fn load_config<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<(T, String)> {
    let text = crate::text::read_text(path)?;
    let mut value: toml::Table =
        toml::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    for item in overrides {
        apply_override(&mut value, item)?;
    }
    let resolved = toml::to_string_pretty(&value).map_err(|e| TrainError::Config(e.to_string()))?;
    let typed: T = toml::from_str(&resolved).map_err(|e| TrainError::Config(format!("{} (after overrides): {e}", path.display())))?;
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

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        train: Train,
    }
    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Train {
        lr: f64,
        name: String,
        steps: u64,
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[train]\nlr = 0.1\nname = \"a\"\nsteps = 3\n").unwrap();
        let (c, resolved): (Demo, String) = load_config(&path, &["train.lr=0.5".into(), "train.name=run two".into()]).unwrap();
        assert_eq!(c.train, Train { lr: 0.5, name: "run two".into(), steps: 3 });
        assert!(resolved.contains("lr = 0.5"));
        let err = load_config::<Demo>(&path, &["train.typo=1".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown field `typo`"), "{err}");
        let err = load_config::<Demo>(&path, &["nonsense".into()]).unwrap_err().to_string();
        assert!(err.contains("section.key=value"), "{err}");
    }
}
