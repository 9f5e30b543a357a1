//! `forge serve`: an OpenAI-compatible HTTP server on forge's rollout engine, for clients written
//! against OpenAI's API or vLLM's server.
//!
//! - `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (plus `GET /health`
//!   and `GET /metrics`).
//! - Chat messages are rendered by the model's own chat template (with `tools` and vLLM's
//!   `chat_template_kwargs`) and encoded by its tokenizer; generation ends at the model's
//!   end-of-turn tokens (generation_config.json), `max_tokens` or a `stop` string.
//! - Qwen/Hermes `<tool_call>` blocks in the output come back as structured `tool_calls`
//!   (forge-agent's parser); output whose blocks do not parse comes back as text.
//! - Every request shares one engine, so concurrent requests are decoded in one batch; at most
//!   `max_concurrency` sequences run at once and further requests wait for a place.
//! - `stream: true` sends each token's text as the engine samples it (server-sent events in
//!   OpenAI's chunk format, ending with `data: [DONE]`).

mod choice;
mod error;
mod model;
mod request;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use forge_engine::{EngineConfig, EngineHandle};
use forge_model::chat_template::ChatTemplate;
use forge_model::tokenizer::Tokenizer;

pub use choice::{content_end, ChoiceBuilder, FinishedChoice, Piece, ToolCall};
pub use error::{ApiError, ServeError};
pub use model::{SamplingDefaults, ServedModel};
pub use request::normalize_messages;
pub use server::Metrics;

/// How to serve a loaded model.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The name clients give as `model`.
    pub served_model_name: String,
    /// Sequences generated at once at most; the engine's batch size. A request with `n` choices
    /// holds `n` places; requests beyond wait for places to free up (never refused for it).
    pub max_concurrency: usize,
    /// Prompt plus completion at most, in tokens; `None`: the model's context. A request must fit
    /// the KV pool at this length (prompt plus `max_tokens`, by default the rest of it).
    pub max_model_len: Option<usize>,
    /// Bytes of the engine's KV block pool, shared by every sequence (`--kv-cache-memory`);
    /// `None`: the engine's default, room for `max_concurrency` sequences of the model's context
    /// (capped at 90% of a GPU's free memory).
    pub kv_cache_memory: Option<u64>,
    /// Positions per KV block (`--block-size`).
    pub block_size: usize,
}

/// A model loaded with its engine, ready to serve.
pub struct ModelServer {
    state: Arc<server::AppState>,
}

impl ModelServer {
    /// Loads the model directory `dir` (config, weights, tokenizer, chat template) in `dtype` on
    /// `device` and starts its engine. `source` is what the user named (a directory or hub id).
    pub fn load(dir: &Path, source: &str, dtype: DType, device: &Device, config: ServeConfig) -> Result<Self, ServeError> {
        if config.max_concurrency == 0 {
            return Err(ServeError::Option("--max-concurrency must be at least 1".into()));
        }
        let tokenizer = Tokenizer::from_model_dir(dir)?;
        let template = ChatTemplate::from_model_dir(dir).map_err(|e| e.to_string());
        if let Err(reason) = &template {
            tracing::warn!("no chat template, /v1/chat/completions will refuse requests: {reason}");
        }
        let end_tokens = forge_engine::generate::stop_tokens(dir, &tokenizer).map_err(|e| ServeError::ModelFile { path: dir.to_path_buf(), reason: e.to_string() })?;
        let defaults = SamplingDefaults::from_model_dir(dir)?;
        let model = Arc::new(forge_model::load_model(dir, dtype, device)?);
        let context = model.config().max_context();
        let max_model_len = match config.max_model_len {
            None => context,
            Some(len) if (2..=context).contains(&len) => len,
            Some(len) => return Err(ServeError::Option(format!("--max-model-len {len} must be between 2 and the model's context, {context}"))),
        };
        let engine = EngineHandle::start(
            model,
            EngineConfig {
                max_batch_size: config.max_concurrency,
                max_step_tokens: EngineConfig::default().max_step_tokens.max(config.max_concurrency),
                prefix_caching: true,
                kv_cache_memory: config.kv_cache_memory,
                block_size: config.block_size,
            },
        )?;
        tracing::info!(
            "serving {} as `{}`: context {max_model_len} tokens, up to {} sequences at once; defaults temperature {} top_p {} top_k {}; end tokens {:?}",
            dir.display(),
            config.served_model_name,
            config.max_concurrency,
            defaults.temperature,
            defaults.top_p,
            defaults.top_k,
            end_tokens
        );
        let served = ServedModel { name: config.served_model_name, tokenizer, template, end_tokens, defaults, max_model_len, max_concurrency: config.max_concurrency };
        let state = server::AppState {
            model: served,
            engine,
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrency)),
            metrics: Metrics::default(),
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            source: source.to_string(),
        };
        Ok(Self { state: Arc::new(state) })
    }

    /// The routes, for serving on a listener of one's own.
    pub fn router(&self) -> axum::Router {
        server::router(self.state.clone())
    }

    pub fn model(&self) -> &ServedModel {
        &self.state.model
    }

    /// The engine every request shares (a test may pause it).
    pub fn engine(&self) -> &EngineHandle {
        &self.state.engine
    }

    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests in flight finish and
    /// stops the engine.
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let result = axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await;
        self.state.engine.shutdown();
        Ok(result?)
    }
}

/// What `forge serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A model directory or an `org/name[@revision]` hub id.
    pub model: String,
    pub host: String,
    /// 0: any free port (the printed URL says which).
    pub port: u16,
    pub dtype: DType,
    pub device: Device,
    /// Default: `model` as given.
    pub served_model_name: Option<String>,
    pub max_concurrency: usize,
    pub max_model_len: Option<usize>,
    pub kv_cache_memory: Option<u64>,
    pub block_size: usize,
}

/// `forge serve`: loads the model, listens, prints the URL on stdout, and serves until Ctrl-C or
/// SIGTERM (requests in flight are finished first).
pub fn run(options: ServeOptions) -> Result<(), ServeError> {
    let dir = forge_model::weights::resolve_model_dir(&options.model)?;
    let config = ServeConfig {
        served_model_name: options.served_model_name.clone().unwrap_or_else(|| options.model.clone()),
        max_concurrency: options.max_concurrency,
        max_model_len: options.max_model_len,
        kv_cache_memory: options.kv_cache_memory,
        block_size: options.block_size,
    };
    let server = ModelServer::load(&dir, &options.model, options.dtype, &options.device, config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let address = format!("{}:{}", options.host, options.port);
        let listener = tokio::net::TcpListener::bind(&address).await.map_err(|source| ServeError::Bind { address: address.clone(), source })?;
        let local: SocketAddr = listener.local_addr()?;
        // stdout, flushed: a script waiting for the server reads the address here
        println!("forge serve: `{}` at http://{local}/v1 (OpenAI-compatible; Ctrl-C to stop)", server.model().name);
        use std::io::Write;
        std::io::stdout().flush()?;
        server.serve(listener, shutdown_signal()).await?;
        tracing::info!("forge serve: stopped");
        Ok(())
    })
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("interrupted: finishing the requests in flight"),
        _ = terminate => tracing::info!("terminated: finishing the requests in flight"),
    }
}
