//! Environments for mined tasks: the Python project layout read at a commit, install
//! strategies tried in turn (each failure read for what to try next), and images built without a
//! registry. A build runs in a *builder* container (network on: PyPI and the Debian mirror are
//! reachable at build time only); only the virtual environment it made is copied into the
//! *runtime* image (the runtime base + the repository at `/testbed` + `/opt/venv`), so no
//! compiler, package cache or installer is left in what task containers run — and those run
//! with no network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use forge_sandbox::{Runtime, Sandbox, SandboxSpec};
use serde::{Deserialize, Serialize};

use super::history::Git;
use crate::bundled::{commit, ensure_runtime_base};
use crate::error::{Result, SweError};

/// What a commit's tree says about installing the project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Files that decide the environment (their contents key the image).
    pub dependency_files: Vec<String>,
    /// `pip install -e .` applies (pyproject with a build system or project table, setup.py, setup.cfg).
    pub installable: bool,
    /// Requirement files to install (documentation requirements left out).
    pub requirements: Vec<String>,
    /// Runtime dependencies declared (pyproject `[project]`/poetry, setup.cfg, requirement files, tox).
    pub declared_dependencies: usize,
    /// Extras that hold test dependencies (`test`, `tests`, `testing`, `dev`).
    pub test_extras: Vec<String>,
    /// `deps` of tox's `[testenv]` (plain requirement lines).
    pub tox_deps: Vec<String>,
    /// pytest plugins the project's pytest options need (from `addopts`).
    pub pytest_plugins: Vec<String>,
    pub requires_python: Option<String>,
    /// The project's own top-level modules and packages (at the root or under `src/`): a
    /// failure to import one of them is a build problem, never a distribution to install.
    pub own_modules: Vec<String>,
}

const TEST_EXTRAS: &[&str] = &["test", "tests", "testing", "dev"];

impl Layout {
    /// Reads the layout of `commit`.
    pub fn at(git: &Git, commit: &str) -> Result<Layout> {
        let listing = git.run(&["ls-tree", "-r", "--name-only", "-z", commit])?;
        let files: Vec<&str> = listing.split('\0').filter(|s| !s.is_empty()).collect();
        let mut layout = Layout::default();
        let top = |name: &str| files.contains(&name);
        for f in &files {
            let inner = f.strip_prefix("src/").unwrap_or(f);
            let own = match inner.split_once('/') {
                Some((dir, "__init__.py")) => Some(dir),
                None if inner.ends_with(".py") && inner != "setup.py" && inner != "conftest.py" => inner.strip_suffix(".py"),
                _ => None,
            };
            if let Some(m) = own.filter(|m| !layout.own_modules.iter().any(|x| x == m)) {
                layout.own_modules.push(m.to_string());
            }
            let name = f.rsplit('/').next().unwrap_or(f);
            let depth = f.matches('/').count();
            let is_req = name.ends_with(".txt")
                && name.contains("requirements")
                && (depth == 0 || (depth == 1 && f.starts_with("requirements/")))
                && !f.contains("doc");
            if is_req {
                layout.requirements.push(f.to_string());
            }
        }
        for f in ["pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "pytest.ini"] {
            if top(f) {
                layout.dependency_files.push(f.to_string());
            }
        }
        layout.dependency_files.extend(layout.requirements.iter().cloned());
        let mut addopts = String::new();
        if let Some(text) = git.show(commit, "pyproject.toml") {
            if let Ok(doc) = text.parse::<toml::Table>() {
                let project = doc.get("project").and_then(|v| v.as_table());
                let poetry = doc.get("tool").and_then(|t| t.get("poetry")).and_then(|v| v.as_table());
                layout.installable |= doc.contains_key("build-system") || project.is_some();
                if let Some(p) = project {
                    layout.declared_dependencies += p.get("dependencies").and_then(|d| d.as_array()).map_or(0, |a| a.len());
                    if let Some(extras) = p.get("optional-dependencies").and_then(|v| v.as_table()) {
                        layout.test_extras.extend(extras.keys().filter(|k| TEST_EXTRAS.contains(&k.as_str())).cloned());
                    }
                    layout.requires_python = p.get("requires-python").and_then(|v| v.as_str()).map(str::to_string);
                }
                if let Some(p) = poetry {
                    // `python` itself is listed among poetry's dependencies.
                    layout.declared_dependencies += p
                        .get("dependencies")
                        .and_then(|d| d.as_table())
                        .map_or(0, |t| t.keys().filter(|k| *k != "python").count());
                }
                if let Some(a) = doc
                    .get("tool")
                    .and_then(|t| t.get("pytest"))
                    .and_then(|t| t.get("ini_options"))
                    .and_then(|t| t.get("addopts"))
                {
                    match a {
                        toml::Value::String(s) => addopts.push_str(s),
                        toml::Value::Array(v) => v.iter().filter_map(|x| x.as_str()).for_each(|s| {
                            addopts.push(' ');
                            addopts.push_str(s)
                        }),
                        _ => {}
                    }
                }
            }
        }
        if top("setup.py") {
            layout.installable = true;
            if let Some(text) = git.show(commit, "setup.py") {
                layout.declared_dependencies += usize::from(text.contains("install_requires"));
                for e in TEST_EXTRAS {
                    let named = text.contains(&format!("'{e}'")) || text.contains(&format!("\"{e}\""));
                    if named && text.contains("extras_require") && !layout.test_extras.iter().any(|x| x == e) {
                        layout.test_extras.push(e.to_string());
                    }
                }
            }
        }
        for file in ["setup.cfg", "tox.ini", "pytest.ini"] {
            let Some(text) = git.show(commit, file) else { continue };
            let ini = parse_ini(&text);
            if file == "setup.cfg" {
                layout.installable = true;
                if let Some(reqs) = ini.get("options").and_then(|s| s.get("install_requires")) {
                    layout.declared_dependencies += requirement_lines(reqs).len();
                }
                if let Some(extras) = ini.get("options.extras_require") {
                    for k in extras.keys().filter(|k| TEST_EXTRAS.contains(&k.as_str())) {
                        if !layout.test_extras.contains(k) {
                            layout.test_extras.push(k.clone());
                        }
                    }
                }
            }
            if file == "tox.ini" {
                if let Some(deps) = ini.get("testenv").and_then(|s| s.get("deps")) {
                    layout.tox_deps = requirement_lines(deps);
                    layout.declared_dependencies += layout.tox_deps.len();
                }
            }
            for section in ["tool:pytest", "pytest"] {
                if let Some(a) = ini.get(section).and_then(|s| s.get("addopts")) {
                    addopts.push(' ');
                    addopts.push_str(a);
                }
            }
        }
        for r in &layout.requirements {
            if let Some(text) = git.show(commit, r) {
                layout.declared_dependencies += requirement_lines(&text).len();
            }
        }
        layout.pytest_plugins = plugins_for_addopts(&addopts);
        Ok(layout)
    }

    /// The environment key of a commit: a hash of the dependency files' blobs, so commits that
    /// declare the same environment share one image, and of the history's `head` (the image
    /// holds the repository up to it).
    pub fn key(&self, git: &Git, commit: &str, head: &str) -> Result<String> {
        let mut args = vec!["ls-tree", commit, "--"];
        args.extend(self.dependency_files.iter().map(String::as_str));
        let listing = if self.dependency_files.is_empty() { String::new() } else { git.run(&args)? };
        let text = format!("forge-foundry-env-v1\nhead {head}\n{listing}");
        let mut child = std::process::Command::new("git")
            .args(["hash-object", "--stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| SweError::Invalid(format!("cannot run git hash-object: {e}")))?;
        use std::io::Write;
        child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| SweError::io("git hash-object", e))?;
        let out = child.wait_with_output().map_err(|e| SweError::io("git hash-object", e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Sections of an INI file (setup.cfg, tox.ini): keys to values, continuation lines joined by
/// newlines. Good enough for the keys the Foundry reads.
fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let (mut section, mut key) = (String::new(), String::new());
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            section = trimmed[1..trimmed.len() - 1].trim().to_string();
            key.clear();
            continue;
        }
        if line.starts_with([' ', '\t']) && !key.is_empty() {
            let v = out.entry(section.clone()).or_default().entry(key.clone()).or_default();
            v.push('\n');
            v.push_str(trimmed);
            continue;
        }
        if let Some((k, v)) = trimmed.split_once('=') {
            key = k.trim().to_string();
            out.entry(section.clone()).or_default().insert(key.clone(), v.trim().to_string());
        }
    }
    out
}

/// Plain requirement lines of a requirements text (comments, options, `-r`/`-e` lines and tox
/// substitutions left out).
fn requirement_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('-') && !l.contains('{') && !l.contains(':'))
        .map(str::to_string)
        .collect()
}

/// The distributions `addopts` needs: `--cov` → pytest-cov, `-n`/`--numprocesses` →
/// pytest-xdist, `--timeout` → pytest-timeout, `--benchmark-*` → pytest-benchmark.
fn plugins_for_addopts(addopts: &str) -> Vec<String> {
    let words: Vec<&str> = addopts.split_whitespace().collect();
    let mut out = Vec::new();
    let mut need = |d: &str| {
        if !out.iter().any(|x| x == d) {
            out.push(d.to_string())
        }
    };
    for w in words {
        if w.starts_with("--cov") {
            need("pytest-cov");
        } else if w == "-n" || w.starts_with("--numprocesses") || (w.starts_with("-n") && w[2..].chars().all(|c| c.is_ascii_digit()) && w.len() > 2) {
            need("pytest-xdist");
        } else if w.starts_with("--timeout") {
            need("pytest-timeout");
        } else if w.starts_with("--benchmark") {
            need("pytest-benchmark");
        } else if w.starts_with("--mypy") {
            need("pytest-mypy");
        } else if w.starts_with("--doctest-plus") {
            need("pytest-doctestplus");
        }
    }
    out
}

/// One way of building an environment. The ladder starts from [`Strategy::first`] and each
/// failure's log decides the next ([`Strategy::next_after`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    /// `false`: the base image's Python and pytest, nothing installed (projects that declare no
    /// dependency); `true`: a virtual environment at `/opt/venv`.
    pub venv: bool,
    pub extras: Vec<String>,
    /// Dependencies resolved as of the commit's date (uv `--exclude-newer`).
    pub dated_dependencies: bool,
    /// pytest and its plugins as of the commit's date too (an old pytest may not run on the
    /// image's Python: then they float).
    pub dated_tools: bool,
    /// Compilers and headers in the builder (C extensions built from source).
    pub system_packages: bool,
    /// setuptools < 58 and no build isolation (setup.py files of an older era).
    pub old_setuptools: bool,
    /// Distributions a failed attempt showed missing.
    pub extra_packages: Vec<String>,
}

impl Strategy {
    pub fn first(layout: &Layout) -> Strategy {
        let bare = layout.declared_dependencies == 0 && layout.pytest_plugins.is_empty();
        Strategy {
            venv: !bare,
            extras: Vec::new(),
            dated_dependencies: true,
            dated_tools: true,
            system_packages: false,
            old_setuptools: false,
            extra_packages: Vec::new(),
        }
    }

    /// A short name for reports (`venv+extras[test]+undated-tools`).
    pub fn name(&self) -> String {
        if !self.venv {
            return "system-python".into();
        }
        let mut n = String::from("venv");
        if !self.extras.is_empty() {
            n.push_str(&format!("+extras[{}]", self.extras.join(",")));
        }
        if !self.dated_dependencies {
            n.push_str("+undated");
        } else if !self.dated_tools {
            n.push_str("+undated-tools");
        }
        if self.system_packages {
            n.push_str("+build-tools");
        }
        if self.old_setuptools {
            n.push_str("+setuptools<58");
        }
        if !self.extra_packages.is_empty() {
            n.push_str(&format!("+{}", self.extra_packages.join(",")));
        }
        n
    }

    /// What to try after a failure with `log`, learning from it; `None` when nothing is left.
    pub fn next_after(&self, log: &str, layout: &Layout) -> Option<(Strategy, String)> {
        let mut s = self.clone();
        if !s.venv {
            return Some((Strategy { venv: true, ..s }, "the base image's Python cannot run the tests: a virtual environment".into()));
        }
        if let Some(module) = missing_module(log).filter(|m| !layout.own_modules.contains(m)) {
            let dist = distribution_for_module(&module);
            if !s.extra_packages.contains(&dist) && s.extra_packages.len() < 4 {
                s.extra_packages.push(dist.clone());
                return Some((s, format!("module `{module}` missing: install {dist}")));
            }
        }
        let compile = ["Python.h", "gcc", "error: command '", "x86_64-linux-gnu-gcc", "cc1", "pkg-config"];
        if !s.system_packages && compile.iter().any(|m| log.contains(m)) {
            s.system_packages = true;
            return Some((s, "a build needed a compiler or headers: build tools in the builder".into()));
        }
        let old = ["use_2to3", "pkg_resources", "setuptools.command", "invalid command 'bdist_wheel'", "does not support editable"];
        if !s.old_setuptools && old.iter().any(|m| log.contains(m)) {
            s.old_setuptools = true;
            return Some((s, "setup.py of an older setuptools era: setuptools<58, no build isolation".into()));
        }
        if s.dated_dependencies && log.contains("build_editable") {
            s.dated_dependencies = false;
            s.dated_tools = false;
            return Some((s, "the commit-era build backend cannot build editable installs (PEP 660): dependencies float".into()));
        }
        if s.dated_tools && pytest_itself_broke(log) {
            s.dated_tools = false;
            return Some((s, "the commit-era pytest does not run on this Python: pytest and plugins float".into()));
        }
        let unsolvable = ["No solution found", "unsatisfiable", "Because ", "no version of", "requires-python"];
        if s.dated_dependencies && unsolvable.iter().any(|m| log.contains(m)) {
            s.dated_dependencies = false;
            s.dated_tools = false;
            return Some((s, "no dated resolution (often the Python version): dependencies float".into()));
        }
        let missing_extras: Vec<String> = layout.test_extras.iter().filter(|e| !s.extras.contains(e)).cloned().collect();
        if !missing_extras.is_empty() {
            s.extras.extend(missing_extras);
            return Some((s, "install the test extras".into()));
        }
        if s.dated_tools {
            s.dated_tools = false;
            return Some((s, "pytest and plugins float".into()));
        }
        if s.dated_dependencies {
            s.dated_dependencies = false;
            return Some((s, "dependencies float".into()));
        }
        None
    }

    /// The bash that installs the environment in a builder container (`/testbed` at the commit).
    pub fn install_script(&self, layout: &Layout, date: &str) -> String {
        let q = crate::harness::shell_quote;
        let mut s = String::from("set -eo pipefail\ncd /testbed\n");
        if self.system_packages {
            s.push_str(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                 build-essential python3-dev pkg-config libffi-dev libssl-dev >/dev/null\n",
            );
        }
        s.push_str("rm -rf /opt/venv && uv venv -q --python /usr/bin/python3 /opt/venv\nexport VIRTUAL_ENV=/opt/venv\n");
        let dated = format!("--exclude-newer {}", q(date));
        let deps_date = if self.dated_dependencies { dated.as_str() } else { "" };
        let mut no_isolation = "";
        if self.old_setuptools {
            s.push_str(&format!("uv pip install {deps_date} 'setuptools<58' wheel\n"));
            no_isolation = "--no-build-isolation";
        }
        let mut args: Vec<String> = Vec::new();
        for r in &layout.requirements {
            args.push(format!("-r {}", q(r)));
        }
        if layout.installable {
            let target = if self.extras.is_empty() { ".".to_string() } else { format!(".[{}]", self.extras.join(",")) };
            args.push(format!("-e {}", q(&target)));
        }
        args.extend(layout.tox_deps.iter().map(|d| q(d)));
        args.extend(self.extra_packages.iter().map(|d| q(d)));
        let mut tools = vec!["pytest".to_string()];
        tools.extend(layout.pytest_plugins.iter().cloned());
        if self.dated_tools {
            args.extend(tools.iter().map(|t| q(t)));
        }
        if !args.is_empty() {
            s.push_str(&format!("uv pip install {deps_date} {no_isolation} {}\n", args.join(" ")));
        }
        if !self.dated_tools {
            s.push_str(&format!("uv pip install {}\n", tools.iter().map(|t| q(t)).collect::<Vec<_>>().join(" ")));
        }
        s
    }
}

/// `No module named 'x.y'` → `x`.
fn missing_module(log: &str) -> Option<String> {
    let re = regex::Regex::new(r"No module named '([A-Za-z0-9_]+)").expect("valid regex");
    let found = re.captures_iter(log).map(|c| c[1].to_string()).find(|m| m != "_pytest" && m != "pytest");
    found
}

/// Import names whose distribution is named differently.
fn distribution_for_module(module: &str) -> String {
    let known = [
        ("yaml", "PyYAML"),
        ("dateutil", "python-dateutil"),
        ("PIL", "Pillow"),
        ("sklearn", "scikit-learn"),
        ("bs4", "beautifulsoup4"),
        ("attr", "attrs"),
        ("jwt", "PyJWT"),
        ("Crypto", "pycryptodome"),
        ("cv2", "opencv-python-headless"),
        ("dotenv", "python-dotenv"),
        ("magic", "python-magic"),
        ("hypothesis", "hypothesis"),
        ("mock", "mock"),
        ("pytest_mock", "pytest-mock"),
        ("freezegun", "freezegun"),
        ("toml", "toml"),
        ("typing_extensions", "typing-extensions"),
    ];
    known.iter().find(|(m, _)| *m == module).map_or_else(|| module.replace('_', "-"), |(_, d)| d.to_string())
}

/// pytest crashed before collecting anything (an old pytest on a newer Python).
fn pytest_itself_broke(log: &str) -> bool {
    (log.contains("/_pytest/") || log.contains("site-packages/py/") || log.contains("site-packages/pluggy"))
        && (log.contains("AttributeError") || log.contains("TypeError") || log.contains("ImportError"))
}

/// Where the build containers get network settings that the host has: its CA bundle (TLS
/// interception is common on clusters) and proxy variables.
#[derive(Debug, Clone, Default)]
pub struct BuildNetwork {
    /// PEM bundle uploaded into builders and trusted by uv, pip and apt.
    pub ca_bundle: Option<PathBuf>,
    pub proxy_env: Vec<String>,
}

impl BuildNetwork {
    /// The host's: `ca` when given, else `SSL_CERT_FILE`, else the system bundle; the proxy
    /// variables of this process.
    pub fn from_host(ca: Option<PathBuf>) -> BuildNetwork {
        let ca = ca
            .or_else(|| std::env::var_os("SSL_CERT_FILE").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")))
            .filter(|p| p.is_file());
        let proxy_env = ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
            .collect();
        BuildNetwork { ca_bundle: ca, proxy_env }
    }

    const CA_PATH: &'static str = "/usr/local/share/forge-ca.pem";

    fn spec(&self, image: &str, label: &str) -> SandboxSpec {
        let mut spec = SandboxSpec::new(image).label("forge.foundry.build", label);
        spec.network = true;
        spec.default_timeout = Duration::from_secs(1800);
        spec.max_output_bytes = 4 << 20;
        for kv in &self.proxy_env {
            spec = spec.env(kv.clone());
        }
        if self.ca_bundle.is_some() {
            for k in ["SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "UV_NATIVE_TLS_CERT"] {
                spec = spec.env(format!("{k}={}", Self::CA_PATH));
            }
        }
        spec.env("UV_CACHE_DIR=/tmp/uv-cache").env("UV_NO_PROGRESS=1").env("PIP_DISABLE_PIP_VERSION_CHECK=1")
    }

    /// A builder container of `image` with the CA bundle in place.
    async fn builder(&self, rt: &Runtime, image: &str, label: &str) -> Result<Sandbox> {
        let sb = rt.create(&self.spec(image, label)).await?;
        if let Some(ca) = &self.ca_bundle {
            let pem = std::fs::read(ca).map_err(|e| SweError::io(ca, e))?;
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(pem.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, Self::CA_PATH.trim_start_matches('/'), &pem[..]).map_err(|e| SweError::io(ca, e))?;
            let tar = tar.into_inner().map_err(|e| SweError::io(ca, e))?;
            sb.upload_tar("/", tar).await?;
        }
        Ok(sb)
    }
}

/// The builder image: the runtime base plus uv (installed from PyPI once per base image).
pub async fn ensure_builder_image(rt: &Runtime, net: &BuildNetwork) -> Result<String> {
    let base = ensure_runtime_base(rt).await?;
    let id = rt.image_info(&base).await?.id;
    let id = id.trim_start_matches("sha256:");
    let tag = format!("forge-foundry/builder:{}", &id[..12.min(id.len())]);
    if rt.image_info(&tag).await.is_ok() {
        return Ok(tag);
    }
    let mut sb = net.builder(rt, &base, "builder").await?;
    let script = "set -e; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                  python3-pip ca-certificates >/dev/null && pip install -q --break-system-packages uv && uv --version && rm -rf /root/.cache /var/lib/apt/lists/*";
    let res = async {
        let o = sb.exec(&["bash", "-c", script], Some(Duration::from_secs(900))).await?;
        if o.exit_code != Some(0) {
            return Err(SweError::Invalid(format!(
                "building the Foundry's builder image failed (the Debian mirror and PyPI must be reachable from containers at build time; \
                 behind TLS interception pass --ca-bundle): {}",
                tail(&o.output, 3000)
            )));
        }
        commit(rt, sb.id(), &tag, "forge foundry builder: runtime base + uv", None).await
    }
    .await;
    let _ = sb.remove().await;
    res?;
    Ok(tag)
}

/// The last `n` bytes of a log (on a char boundary).
pub fn tail(s: &str, n: usize) -> String {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// One attempt of a build, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub strategy: String,
    pub ok: bool,
    /// Why this strategy was chosen (what the previous failure showed).
    pub because: String,
    /// The failure's log tail (empty when ok).
    pub log_tail: String,
    pub seconds: f64,
}

/// A built environment image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltEnv {
    pub image: String,
    pub commit: String,
    pub strategy: String,
    /// The pytest command tasks on this image run (plugins loaded explicitly: task runs disable
    /// plugin autoloading).
    pub test_cmd: String,
    pub attempts: Vec<Attempt>,
}

/// What an environment build needs to know.
pub struct EnvRequest<'a> {
    pub git: &'a Git,
    /// The repository as a tar of `testbed/.git` (uploaded into every container).
    pub repo_tar: &'a [u8],
    pub commit: &'a str,
    /// ISO date the dependencies are resolved as of.
    pub date: &'a str,
    /// Test files that must collect (the candidate's, at the commit).
    pub test_files: &'a [String],
    pub tag: String,
    pub max_attempts: usize,
}

/// Builds (or finds) the environment image `req.tag`, trying strategies until the candidate's
/// test files collect. `Err` carries every attempt.
pub async fn build_env(rt: &Runtime, net: &BuildNetwork, req: &EnvRequest<'_>) -> std::result::Result<BuiltEnv, Vec<Attempt>> {
    let layout = match Layout::at(req.git, req.commit) {
        Ok(l) => l,
        Err(e) => {
            return Err(vec![Attempt { strategy: "layout".into(), ok: false, because: String::new(), log_tail: e.to_string(), seconds: 0.0 }])
        }
    };
    if let Some(built) = existing_env(rt, &req.tag).await {
        return Ok(built);
    }
    let mut attempts = Vec::new();
    let mut strategy = Strategy::first(&layout);
    let mut because = "first strategy for this layout".to_string();
    loop {
        let t = std::time::Instant::now();
        let res = try_strategy(rt, net, req, &layout, &strategy).await;
        let seconds = t.elapsed().as_secs_f64();
        match res {
            Ok(test_cmd) => {
                attempts.push(Attempt { strategy: strategy.name(), ok: true, because, log_tail: String::new(), seconds });
                return Ok(BuiltEnv { image: req.tag.clone(), commit: req.commit.to_string(), strategy: strategy.name(), test_cmd, attempts });
            }
            Err(log) => {
                attempts.push(Attempt { strategy: strategy.name(), ok: false, because: because.clone(), log_tail: tail(&log, 2000), seconds });
                if attempts.len() >= req.max_attempts {
                    return Err(attempts);
                }
                match strategy.next_after(&log, &layout) {
                    Some((next, why)) => {
                        strategy = next;
                        because = why;
                    }
                    None => return Err(attempts),
                }
            }
        }
    }
}

/// An environment image an earlier run built (its labels say how), reused as is.
async fn existing_env(rt: &Runtime, tag: &str) -> Option<BuiltEnv> {
    let info = rt.docker().inspect_image(tag).await.ok()?;
    let labels = info.config?.labels?;
    let label = |k: &str| labels.get(k).cloned();
    let strategy = label(LABEL_STRATEGY)?;
    Some(BuiltEnv {
        image: tag.to_string(),
        commit: label(LABEL_COMMIT)?,
        test_cmd: label(LABEL_TEST_CMD)?,
        attempts: vec![Attempt { strategy: strategy.clone(), ok: true, because: "built by an earlier run".into(), log_tail: String::new(), seconds: 0.0 }],
        strategy,
    })
}

const LABEL_STRATEGY: &str = "forge.foundry.strategy";
const LABEL_COMMIT: &str = "forge.foundry.commit";
const LABEL_TEST_CMD: &str = "forge.foundry.test_cmd";

/// Tars the untracked files of `/testbed` (ignored ones included, byte-code left out) into
/// `/tmp/forge-generated.tar`.
const COLLECT_GENERATED: &str = "cd /testbed && git -c safe.directory='*' ls-files --others -z \
    | { grep -zv -e '__pycache__/' -e '\\.pyc$' || true; } | tar --null -T - -cf /tmp/forge-generated.tar";

/// `--color=no`: a project's `addopts` may ask for colour, which no log parser reads.
const BASE_TEST_CMD: &str = "pytest -rA -p no:cacheprovider --color=no";
const VENV_CHANGES: &str = "WORKDIR /testbed\nENV VIRTUAL_ENV=/opt/venv\nENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One strategy: install (in a builder for venvs), make the runtime image, and check that the
/// test files collect there with the hardened test command. `Err` is the log to learn from.
async fn try_strategy(
    rt: &Runtime,
    net: &BuildNetwork,
    req: &EnvRequest<'_>,
    layout: &Layout,
    strategy: &Strategy,
) -> std::result::Result<String, String> {
    let runtime_base = ensure_runtime_base(rt).await.map_err(|e| e.to_string())?;
    let checkout = format!(
        "cd /testbed && git -c safe.directory='*' reset -q --hard {} && git -c safe.directory='*' clean -fdxq",
        req.commit
    );
    let mut venv_tar = None;
    if strategy.venv {
        let builder_image = ensure_builder_image(rt, net).await.map_err(|e| e.to_string())?;
        let mut sb = net.builder(rt, &builder_image, "env").await.map_err(|e| e.to_string())?;
        let res = async {
            sb.upload_tar("/", req.repo_tar.to_vec()).await.map_err(|e| e.to_string())?;
            let script = format!("{checkout}\n{}", strategy.install_script(layout, req.date));
            let o = sb.exec(&["bash", "-c", &script], Some(Duration::from_secs(1800))).await.map_err(|e| e.to_string())?;
            if o.exit_code != Some(0) {
                return Err(format!("install failed ({}):\n{}", strategy.name(), o.output));
            }
            // Files the install generated in the work tree (a version file a VCS-versioning
            // backend writes, compiled extensions) go along with the venv.
            let o = sb.exec(&["bash", "-c", COLLECT_GENERATED], Some(Duration::from_secs(300))).await.map_err(|e| e.to_string())?;
            if o.exit_code != Some(0) {
                return Err(format!("collecting the files the install generated failed:\n{}", o.output));
            }
            let generated = sb.read_file("/tmp/forge-generated.tar", 1 << 30).await.map_err(|e| format!("copying generated files out: {e}"))?.0;
            let venv = sb.download_tar("/opt/venv", 8 << 30).await.map_err(|e| format!("copying the environment out: {e}"))?;
            Ok((venv, generated))
        }
        .await;
        let _ = sb.remove().await;
        venv_tar = Some(res?);
    }
    // The runtime image: base + repository (+ venv).
    let mut sb = rt
        .create(&SandboxSpec::new(runtime_base.clone()).label("forge.foundry.build", "runtime"))
        .await
        .map_err(|e| e.to_string())?;
    let res = async {
        sb.upload_tar("/", req.repo_tar.to_vec()).await.map_err(|e| e.to_string())?;
        let o = sb.exec(&["bash", "-c", &checkout], Some(Duration::from_secs(300))).await.map_err(|e| e.to_string())?;
        if o.exit_code != Some(0) {
            return Err(format!("checking out {} failed:\n{}", req.commit, o.output));
        }
        if let Some((venv, generated)) = venv_tar {
            sb.upload_tar("/opt", venv).await.map_err(|e| e.to_string())?;
            sb.upload_tar("/testbed", generated).await.map_err(|e| e.to_string())?;
        }
        let path = if strategy.venv { "export VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH; " } else { "" };
        // The plugins the environment has, loaded by entry-point name (`-p NAME`): hardened task
        // runs disable autoloading; where it is on, a name already loaded is skipped (a module
        // path would be registered twice and stop pytest).
        let plugins = format!(
            "{path}python3 -c 'import importlib.metadata as m; print(\" \".join(sorted({{e.name for e in m.entry_points(group=\"pytest11\")}})))'"
        );
        let o = sb.exec(&["bash", "-c", &plugins], Some(Duration::from_secs(120))).await.map_err(|e| e.to_string())?;
        if o.exit_code != Some(0) {
            return Err(format!("the runtime image is broken:\n{}", o.output));
        }
        let mut test_cmd = BASE_TEST_CMD.to_string();
        for p in o.output.split_whitespace() {
            test_cmd.push_str(&format!(" -p {p}"));
        }
        let files: Vec<String> = req.test_files.iter().map(|f| crate::harness::shell_quote(f)).collect();
        let collect = format!(
            "{path}cd /testbed && {} --collect-only -q {}; rc=$?; find . -name __pycache__ -prune -exec rm -rf {{}} +; exit $rc",
            crate::harness::harden_test_cmd(&test_cmd),
            files.join(" ")
        );
        let o = sb.exec(&["bash", "-c", &collect], Some(Duration::from_secs(600))).await.map_err(|e| e.to_string())?;
        if o.exit_code != Some(0) {
            return Err(format!("the test files do not collect ({}):\n{}", strategy.name(), o.output));
        }
        let mut changes = if strategy.venv { VENV_CHANGES } else { "WORKDIR /testbed" }.to_string();
        for (k, v) in [(LABEL_STRATEGY, strategy.name()), (LABEL_COMMIT, req.commit.to_string()), (LABEL_TEST_CMD, test_cmd.clone())] {
            changes.push_str(&format!("\nLABEL {k}=\"{}\"", v.replace('"', "'")));
        }
        commit(rt, sb.id(), &req.tag, &format!("forge foundry environment ({})", strategy.name()), Some(&changes))
            .await
            .map_err(|e| e.to_string())?;
        Ok(test_cmd)
    }
    .await;
    let _ = sb.remove().await;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addopts_name_the_plugins_they_need() {
        assert_eq!(plugins_for_addopts("--cov=pkg --cov-report=term -n 4 --strict-markers"), vec!["pytest-cov", "pytest-xdist"]);
        assert_eq!(plugins_for_addopts("-n4 --timeout=30"), vec!["pytest-xdist", "pytest-timeout"]);
        assert!(plugins_for_addopts("-ra -q --strict").is_empty());
    }

    #[test]
    fn ini_and_requirement_lines() {
        let ini = parse_ini("[options]\ninstall_requires =\n    attrs>=20\n    six\n[options.extras_require]\ntest = pytest\n[tool:pytest]\naddopts = --cov pkg\n");
        assert_eq!(requirement_lines(&ini["options"]["install_requires"]), vec!["attrs>=20", "six"]);
        assert!(ini["options.extras_require"].contains_key("test"));
        assert_eq!(ini["tool:pytest"]["addopts"], "--cov pkg");
        assert_eq!(requirement_lines("# c\n-r base.txt\nrequests==2.0  # pinned\n{[base]deps}\n-e .\n"), vec!["requests==2.0"]);
    }

    #[test]
    fn failures_teach_the_next_strategy() {
        let layout = Layout { declared_dependencies: 2, installable: true, test_extras: vec!["test".into()], ..Default::default() };
        let s = Strategy::first(&layout);
        assert!(s.venv && s.dated_dependencies && s.dated_tools);
        let (s2, why) = s.next_after("E   ModuleNotFoundError: No module named 'yaml'", &layout).unwrap();
        assert_eq!(s2.extra_packages, vec!["PyYAML"], "{why}");
        let (s3, _) = s2.next_after("error: command 'x86_64-linux-gnu-gcc' failed", &layout).unwrap();
        assert!(s3.system_packages);
        let (s4, _) = s3.next_after("File \"/opt/venv/lib/python3.11/site-packages/py/_vendored_packages/apipkg/__init__.py\"\nAttributeError: __spec__", &layout).unwrap();
        assert!(!s4.dated_tools && s4.dated_dependencies);
        let (s5, _) = s4.next_after("something else", &layout).unwrap();
        assert_eq!(s5.extras, vec!["test"]);
        let (editable, why) = s.next_after("AttributeError: '_BuildMetaLegacyBackend' object has no attribute 'build_editable'", &layout).unwrap();
        assert!(!editable.dated_dependencies && why.contains("PEP 660"), "{why}");
        let (s6, _) = s5.next_after("something else", &layout).unwrap();
        assert!(!s6.dated_dependencies);
        assert!(s6.next_after("something else", &layout).is_none(), "the ladder ends");
        // a project with no dependencies starts on the base image's Python, then gets a venv
        let bare = Strategy::first(&Layout::default());
        assert!(!bare.venv);
        assert!(bare.next_after("No module named 'pkg'", &Layout::default()).unwrap().0.venv);
    }

    #[test]
    fn install_script_pins_the_date_and_loads_tools() {
        let layout = Layout { installable: true, requirements: vec!["requirements-dev.txt".into()], pytest_plugins: vec!["pytest-cov".into()], ..Default::default() };
        let s = Strategy { extras: vec!["test".into()], ..Strategy::first(&Layout { declared_dependencies: 1, ..Default::default() }) };
        let script = s.install_script(&layout, "2024-01-02T03:04:05Z");
        assert!(script.contains("uv pip install --exclude-newer '2024-01-02T03:04:05Z'  -r 'requirements-dev.txt' -e '.[test]' 'pytest' 'pytest-cov'"), "{script}");
        let floating = Strategy { dated_tools: false, ..s };
        let script = floating.install_script(&layout, "2024-01-02T03:04:05Z");
        assert!(script.ends_with("uv pip install 'pytest' 'pytest-cov'\n"), "{script}");
    }
}
