//! Where a Docker Engine is and how to reach it: its endpoint, TLS client certificates and the
//! capacity forge may use on it. One entry of `[sandbox] hosts` / `--docker-host`.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The local engine's socket, used when neither a host list nor `$DOCKER_HOST` names one.
pub const LOCAL_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// One Docker Engine of the sandbox fleet.
///
/// Written as a plain endpoint (`"tcp://10.0.0.2:2376"`) or as a table in config files, and as
/// `ENDPOINT[,key=value...]` on the command line (keys: `max_containers`, `cpus`, `memory`, `tls`):
/// `--docker-host tcp://10.0.0.2:2376,max_containers=80,cpus=64,memory=256G,tls=/etc/forge/certs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "EngineEntry")]
pub struct EngineSpec {
    /// `unix:///path/docker.sock` or `tcp://host:port`.
    pub endpoint: String,
    /// Directory with `ca.pem`, `cert.pem` and `key.pem` (Docker's `DOCKER_CERT_PATH`
    /// convention): the engine is reached over TLS and must present a certificate signed by
    /// `ca.pem`; this client authenticates with `cert.pem`/`key.pem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<PathBuf>,
    /// Containers forge runs on this engine at once at most (unset: no bound of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_containers: Option<usize>,
    /// CPUs that the running containers' CPU limits may add up to (unset: no bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Bytes that the running containers' memory limits may add up to (unset: no bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// The forms an engine takes in a config file.
#[derive(Deserialize)]
#[serde(untagged)]
enum EngineEntry {
    Endpoint(String),
    Table {
        endpoint: String,
        #[serde(default)]
        tls: Option<PathBuf>,
        #[serde(default)]
        max_containers: Option<usize>,
        #[serde(default)]
        cpus: Option<f64>,
        /// `"256G"` or bytes.
        #[serde(default)]
        memory: Option<SizeEntry>,
        #[serde(default)]
        memory_bytes: Option<u64>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeEntry {
    Bytes(u64),
    Text(String),
}

impl TryFrom<EngineEntry> for EngineSpec {
    type Error = String;

    fn try_from(entry: EngineEntry) -> Result<Self, String> {
        match entry {
            EngineEntry::Endpoint(text) => text.parse(),
            EngineEntry::Table { endpoint, tls, max_containers, cpus, memory, memory_bytes } => {
                let memory_bytes = match (memory, memory_bytes) {
                    (Some(SizeEntry::Bytes(b)), _) => Some(b),
                    (Some(SizeEntry::Text(t)), _) => Some(crate::images::parse_size(&t)?),
                    (None, b) => b,
                };
                let mut spec = EngineSpec::new(&endpoint)?;
                spec.tls = tls.or(spec.tls);
                spec.max_containers = max_containers;
                spec.cpus = cpus;
                spec.memory_bytes = memory_bytes;
                spec.validate()?;
                Ok(spec)
            }
        }
    }
}

impl EngineSpec {
    /// An engine at `endpoint` with no capacity bounds. A `tcp://` endpoint gets TLS when
    /// `DOCKER_TLS_VERIFY` is set (certificates from `DOCKER_CERT_PATH`, else `~/.docker`), as
    /// the docker CLI does.
    pub fn new(endpoint: &str) -> Result<Self, String> {
        let endpoint = endpoint.trim();
        let endpoint = if endpoint.starts_with('/') { format!("unix://{endpoint}") } else { endpoint.to_string() };
        if !(endpoint.starts_with("unix://") || endpoint.starts_with("tcp://") || endpoint.starts_with("http://")) {
            return Err(format!("Docker endpoint {endpoint:?}: use unix:///path/docker.sock or tcp://host:port"));
        }
        let tls = endpoint.starts_with("tcp://").then(tls_from_env).flatten();
        Ok(EngineSpec { endpoint, tls, max_containers: None, cpus: None, memory_bytes: None })
    }

    /// The engine `$DOCKER_HOST` names (with its TLS settings), or the local socket.
    pub fn from_env() -> Result<Self, String> {
        let endpoint = std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| LOCAL_ENDPOINT.to_string());
        EngineSpec::new(&endpoint).map_err(|e| format!("$DOCKER_HOST: {e}"))
    }

    /// The engines to use: `hosts` when it names any, else the one [`EngineSpec::from_env`] names.
    pub fn fleet_or_env(hosts: &[EngineSpec]) -> Result<Vec<EngineSpec>, String> {
        if hosts.is_empty() {
            return Ok(vec![EngineSpec::from_env()?]);
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in hosts {
            if !seen.insert(&h.endpoint) {
                return Err(format!("Docker engine {} is listed twice; list each engine once", h.endpoint));
            }
        }
        Ok(hosts.to_vec())
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_containers == Some(0) {
            return Err(format!("{}: max_containers = 0 leaves no room; remove the engine instead", self.endpoint));
        }
        if self.cpus.is_some_and(|c| !(c > 0.0) || !c.is_finite()) {
            return Err(format!("{}: cpus must be a positive number", self.endpoint));
        }
        if self.memory_bytes == Some(0) {
            return Err(format!("{}: memory must be positive", self.endpoint));
        }
        if self.tls.is_some() && !self.endpoint.starts_with("tcp://") {
            return Err(format!("{}: TLS certificates apply to tcp:// endpoints only", self.endpoint));
        }
        Ok(())
    }

    /// This engine's bounds for one of `processes` processes that each place containers on it
    /// without seeing the others' (data-parallel workers each have their own fleet): every bound
    /// divided evenly, at least one container each.
    pub fn share(&self, processes: usize) -> EngineSpec {
        let n = processes.max(1);
        EngineSpec {
            max_containers: self.max_containers.map(|m| (m / n).max(1)),
            cpus: self.cpus.map(|c| c / n as f64),
            memory_bytes: self.memory_bytes.map(|m| m / n as u64),
            ..self.clone()
        }
    }

    /// Whether the engine runs on this machine (its container layers can be read from here).
    pub fn is_local(&self) -> bool {
        self.endpoint.starts_with("unix://")
    }
}

/// `DOCKER_TLS_VERIFY` set (to anything but empty or 0): the certificates' directory.
fn tls_from_env() -> Option<PathBuf> {
    std::env::var("DOCKER_TLS_VERIFY").ok().filter(|v| !v.is_empty() && v != "0")?;
    match std::env::var_os("DOCKER_CERT_PATH").filter(|p| !p.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")),
    }
}

impl FromStr for EngineSpec {
    type Err = String;

    /// `ENDPOINT[,max_containers=N][,cpus=N][,memory=SIZE][,tls=DIR]`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',');
        let mut spec = EngineSpec::new(parts.next().unwrap_or_default())?;
        for part in parts {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("{text:?}: {part:?} is not key=value"))?;
            let bad = |what: &str| format!("{text:?}: {key}={value:?} is not {what}");
            match key.trim() {
                "max_containers" | "max" => spec.max_containers = Some(value.parse().map_err(|_| bad("a count"))?),
                "cpus" => spec.cpus = Some(value.parse().map_err(|_| bad("a number of CPUs"))?),
                "memory" => spec.memory_bytes = Some(crate::images::parse_size(value)?),
                "tls" => spec.tls = Some(PathBuf::from(value)),
                other => return Err(format!("{text:?}: unknown engine setting {other:?} (use max_containers, cpus, memory, tls)")),
            }
        }
        spec.validate()?;
        Ok(spec)
    }
}

impl std::fmt::Display for EngineSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_form_parses_every_setting() {
        let e: EngineSpec = "tcp://10.0.0.2:2376,max_containers=80,cpus=64,memory=256G,tls=/certs".parse().unwrap();
        assert_eq!(e.endpoint, "tcp://10.0.0.2:2376");
        assert_eq!((e.max_containers, e.cpus, e.memory_bytes), (Some(80), Some(64.0), Some(256 << 30)));
        assert_eq!(e.tls.as_deref(), Some(std::path::Path::new("/certs")));
        let local: EngineSpec = "/var/run/docker.sock".parse().unwrap();
        assert_eq!(local.endpoint, LOCAL_ENDPOINT);
        assert!(local.is_local());
    }

    #[test]
    fn bad_engines_are_refused_with_the_fix() {
        for (text, says) in [
            ("ssh://box", "use unix://"),
            ("tcp://h:1,max=0", "max_containers = 0"),
            ("tcp://h:1,cpus=-1", "cpus must be a positive"),
            ("tcp://h:1,gpus=1", "unknown engine setting"),
            ("tcp://h:1,cpus", "not key=value"),
            ("unix:///s,tls=/c", "tcp:// endpoints only"),
        ] {
            let e = text.parse::<EngineSpec>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let twice = [EngineSpec::new("tcp://a:1").unwrap(), EngineSpec::new("tcp://a:1").unwrap()];
        assert!(EngineSpec::fleet_or_env(&twice).unwrap_err().contains("listed twice"));
    }

    #[test]
    fn processes_get_even_shares_of_the_bounds() {
        let e: EngineSpec = "tcp://h:1,max_containers=80,cpus=64,memory=256G".parse().unwrap();
        let s = e.share(8);
        assert_eq!((s.max_containers, s.cpus, s.memory_bytes), (Some(10), Some(8.0), Some(32 << 30)));
        assert_eq!("tcp://h:1,max=3".parse::<EngineSpec>().unwrap().share(4).max_containers, Some(1), "at least one each");
        let unbounded = EngineSpec::new("tcp://h:1").unwrap();
        assert_eq!(unbounded.share(8), unbounded);
        assert_eq!(e.share(1), e);
    }

    #[test]
    fn config_form_takes_strings_and_tables() {
        #[derive(Deserialize)]
        struct Section {
            hosts: Vec<EngineSpec>,
        }
        let s: Section = toml::from_str(
            r#"hosts = ["unix:///var/run/docker.sock", { endpoint = "tcp://h:2376", tls = "/c", max_containers = 8, cpus = 16, memory = "64G" }]"#,
        )
        .unwrap();
        assert_eq!(s.hosts[0].endpoint, LOCAL_ENDPOINT);
        assert_eq!(s.hosts[1].memory_bytes, Some(64 << 30));
        assert_eq!(s.hosts[1].max_containers, Some(8));
        let bad = toml::from_str::<Section>(r#"hosts = [{ endpoint = "tcp://h:2376", max_containers = 0 }]"#);
        assert!(bad.is_err());
        // what a run records reads back to the same engines
        let json = serde_json::to_string(&s.hosts).unwrap();
        let back: Vec<EngineSpec> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s.hosts);
    }
}
