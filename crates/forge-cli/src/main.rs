//! `forge`: the command line. It parses arguments and calls the libraries; nothing else.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use forge_model::device::DeviceSpec;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "forge", version, about = "Train Qwen3 models into software-engineering agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: boxing the large variants would only obscure the matches.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Write a checkpoint as a Hugging Face model directory (sharded safetensors, config, tokenizer).
    Export {
        /// Model or checkpoint directory (HF layout).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory; must be empty or absent unless --force.
        #[arg(long)]
        out: PathBuf,
        /// Largest shard, e.g. 5GB, 500MB, 2GiB (HF semantics).
        #[arg(long, default_value = "5GB")]
        shard_size: String,
        /// Stored dtype; default: the checkpoint's own.
        #[arg(long)]
        dtype: Option<CliDType>,
        /// Replace a non-empty output directory.
        #[arg(long)]
        force: bool,
    },
    /// Per-token log-probabilities of sequences: `{"tokens": [ids]}` or `{"text": "..."}` per line.
    Score {
        /// Model directory, or an `org/name[@revision]` hub id (downloaded into the Hugging Face cache if missing).
        #[arg(long)]
        model: String,
        /// JSONL input.
        #[arg(long)]
        input: PathBuf,
        /// JSONL output (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = CliDType::F32)]
        dtype: CliDType,
        /// cpu, or cuda / cuda:N with a CUDA build.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Continue a raw text (--prompt) or a chat conversation (--messages) with a model, for quick
    /// manual checks; stops at the model's end-of-turn / eos tokens.
    Generate {
        /// Model directory, or an `org/name[@revision]` hub id (downloaded into the Hugging Face cache if missing).
        #[arg(long)]
        model: String,
        /// Raw text, continued as is (no chat template).
        #[arg(long, conflicts_with = "messages", required_unless_present = "messages")]
        prompt: Option<String>,
        /// JSON conversation (a list of messages, or {"messages": [...], "tools": [...]}), rendered
        /// with the model's chat template plus the generation prompt.
        #[arg(long)]
        messages: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus sampling threshold; 1 = off.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Sample among the K most likely tokens; 0 = off.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print {"text", "tokens", "logprobs", "finish_reason"} as JSON instead of the text.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value_t = CliDType::F32)]
        dtype: CliDType,
        /// cpu, or cuda / cuda:N with a CUDA build.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// An OpenAI-compatible HTTP server on the rollout engine: GET /v1/models, POST
    /// /v1/chat/completions (tools, streaming, logprobs) and /v1/completions. Concurrent requests
    /// share one decoding batch. Prints the URL; Ctrl-C or SIGTERM stops it once requests in
    /// flight are answered.
    Serve {
        /// Model directory, or an `org/name[@revision]` hub id (downloaded into the Hugging Face cache if missing).
        #[arg(long)]
        model: String,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// 0: any free port (the printed URL says which).
        #[arg(long, default_value_t = 8000)]
        port: u16,
        #[arg(long, value_enum, default_value_t = CliDType::F32)]
        dtype: CliDType,
        /// cpu, or cuda / cuda:N with a CUDA build.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// The name clients give as `model` (default: --model as given).
        #[arg(long)]
        served_model_name: Option<String>,
        /// Sequences generated at once at most (the engine's batch; a request with n choices holds
        /// n); further requests wait for a place, they are not refused.
        #[arg(long, default_value_t = 32)]
        max_concurrency: usize,
        /// Prompt plus completion at most, in tokens (default: the model's context). A request
        /// must fit the KV pool at its prompt plus max_tokens (by default the rest of this length).
        #[arg(long)]
        max_model_len: Option<usize>,
        /// The KV cache pool shared by all sequences, e.g. 20GiB (default: room for
        /// --max-concurrency sequences of the model's context, at most 90% of a GPU's free memory).
        /// When it is full, the latest sequence is preempted and recomputed later.
        #[arg(long, value_name = "SIZE")]
        kv_cache_memory: Option<forge_model::memory::ByteSize>,
        /// Tokens per KV cache block: the granularity of allocation and prefix sharing.
        #[arg(long, default_value_t = 16)]
        block_size: usize,
    },
    /// Training recipes.
    Train {
        #[command(subcommand)]
        recipe: TrainCommand,
    },
    /// The memory plan of a training config, per worker (per GPU): weights, reference,
    /// gradients, optimizer, activations, KV pool and workspace as train.zero_stage shards them,
    /// whether they fit, the largest train.micro_batch_tokens and rollout sequences × context that
    /// would; exits 1 naming the setting to change when the run cannot fit. Needs no weights: a
    /// Qwen3 release's hub id (model.path = "Qwen/Qwen3-8B") plans from its published architecture.
    Plan {
        /// An SFT or RL config (TOML), e.g. configs/qwen3-8b/sft.toml.
        #[arg(long)]
        config: PathBuf,
        /// Override a config value: --set train.zero_stage=3 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Which recipe the config is for (default: told by its sections: [rollout], [agent],
        /// [objective], [engine] or train.steps make it RL).
        #[arg(long, value_enum)]
        kind: Option<RecipeKind>,
        /// Data-parallel workers per node (one per GPU), as `forge train --nproc-per-node`.
        #[arg(long, default_value_t = 1, value_name = "N")]
        nproc_per_node: usize,
        /// Nodes: the workers that shard the state are N × M.
        #[arg(long, default_value_t = 1, value_name = "M")]
        nnodes: usize,
        /// Memory of each GPU, e.g. 80GiB or 141GB (default: model.device's free memory; on the
        /// CPU the host's available memory shared by the N workers).
        #[arg(long, value_name = "SIZE")]
        gpu_memory: Option<forge_model::memory::ByteSize>,
    },
    /// Look at training data the way the trainer sees it.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Evaluate predictions (patches) on SWE-bench-style instances, as the official harness does.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// Rejection sampling of a teacher's trajectories into SFT data: --attempts attempts per
    /// instance, each in its own container at --temperature with a seed derived from (--seed,
    /// instance, attempt), graded in a fresh container. Writes OUT/attempts.jsonl (every attempt,
    /// appended as it finishes), OUT/sft.jsonl (the resolved attempts, deduplicated: `forge train
    /// sft` data), OUT/solve_rates.jsonl (per instance: a difficulty label), OUT/trajectories/.
    #[command(group(clap::ArgGroup::new("teacher").required(true).args(["model", "endpoint"])))]
    Sample {
        /// Instances: parquet, JSONL or JSON (e.g. tasks/bundled.jsonl).
        #[arg(long)]
        dataset: PathBuf,
        /// The teacher: a model directory or org/name, run by the rollout engine.
        #[arg(long, conflicts_with = "tokenizer")]
        model: Option<String>,
        /// The teacher on an OpenAI-compatible server (vLLM, SGLang, forge serve), base URL.
        #[arg(long, value_name = "URL", conflicts_with = "model", requires_all = ["tokenizer", "served_model"])]
        endpoint: Option<String>,
        /// With --endpoint: the served model's name.
        #[arg(long, value_name = "NAME", requires = "endpoint")]
        served_model: Option<String>,
        /// With --endpoint: the environment variable holding the API key [default: no key].
        #[arg(long, value_name = "VAR", requires = "endpoint")]
        api_key_env: Option<String>,
        /// With --endpoint: the tokenizer directory (tokenizer.json + chat template) or org/name.
        #[arg(long)]
        tokenizer: Option<String>,
        /// Attempts per instance.
        #[arg(long, default_value_t = 8)]
        attempts: usize,
        /// Stop sampling an instance after this many resolved attempts.
        #[arg(long, value_name = "N")]
        max_solutions_per_instance: Option<usize>,
        /// Sampling temperature of every attempt.
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// Base of the per-attempt seeds.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Concurrent attempts.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Continue: skip the attempts OUT/attempts.jsonl already lists.
        #[arg(long)]
        resume: bool,
        /// Only these instances (space-separated).
        #[arg(long, num_args = 1..)]
        instance_ids: Vec<String>,
        /// Assistant turns per attempt at most.
        #[arg(long, default_value_t = 35)]
        max_turns: usize,
        /// Context budget in tokens, prompt and generation.
        #[arg(long, default_value_t = 32768)]
        max_context_tokens: usize,
        /// Prompts and tools shown to the teacher: standard or minimal [default: standard].
        #[arg(long)]
        scaffold: Option<forge_agent::Scaffold>,
        /// Re-runs of an attempt after infrastructure failures (not counted as attempts).
        #[arg(long, default_value_t = 3)]
        infra_retries: usize,
        /// Per-attempt test timeout of the grading in seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Grading semantics: v4 (default) or v5.
        #[arg(long, default_value = "v4")]
        grading: String,
        /// When instance images are pulled from their registries: never, missing (default) or
        /// always (each image once per run).
        #[arg(long, value_name = "POLICY", default_value = "missing")]
        pull: forge_sandbox::PullPolicy,
        /// With --model: dtype and device.
        #[arg(long, value_enum, default_value_t = CliDType::F32)]
        dtype: CliDType,
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        #[command(flatten)]
        container: ContainerArgs,
    },
    /// The Foundry: eval-ready tasks mined from a repository's git history.
    Foundry {
        #[command(subcommand)]
        command: FoundryCommand,
    },
    /// Task-set utilities.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Task images: load `docker save` archives, pull, prune what forge pulled to a disk budget.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Docker sandbox utilities.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Supervised fine-tuning on chat/tool-call trajectories with an assistant-only loss.
    Sft(RecipeArgs),
    /// GRPO with a KL penalty: the agent rolls out in Docker, rewarded 1 when the tests pass.
    Rl(RecipeArgs),
}

#[derive(clap::Args)]
struct RecipeArgs {
    /// Recipe config (TOML), e.g. configs/tiny/sft.toml.
    #[arg(long)]
    config: PathBuf,
    /// Override a config value: --set train.epochs=1 --set optim.lr=1e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// RL: a Docker engine for the rollouts' containers (repeatable; sets sandbox.hosts), as
    /// `forge eval swebench --docker-host`.
    #[arg(long = "docker-host", value_name = "ENDPOINT[,max_containers=N,cpus=N,memory=SIZE,tls=DIR]")]
    docker_hosts: Vec<forge_sandbox::EngineSpec>,
    /// Continue the run in run.dir from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Print the resolved config and exit.
    #[arg(long)]
    print_config: bool,
    /// Data-parallel workers on this machine (one per GPU, torchrun's --nproc-per-node): each
    /// step takes train.grad_accum micro-batches (SFT) or rollout.groups_per_step groups (RL) on
    /// every worker. Workers started by another launcher take RANK, LOCAL_RANK, WORLD_SIZE,
    /// MASTER_ADDR, MASTER_PORT instead.
    #[arg(long, default_value_t = 1, value_name = "N")]
    nproc_per_node: usize,
    /// Nodes of a multi-node run (start `forge` with the same arguments on each, with its --node-rank).
    #[arg(long, default_value_t = 1, value_name = "M")]
    nnodes: usize,
    /// This node's index, 0..M (node 0 hosts rank 0).
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Node 0's address, where the workers meet.
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    /// Rank 0's port (default on one node: a free one).
    #[arg(long)]
    master_port: Option<u16>,
}

impl RecipeArgs {
    fn launch_plan(&self) -> forge_train::distributed::launch::LaunchPlan {
        forge_train::distributed::launch::LaunchPlan {
            nproc_per_node: self.nproc_per_node,
            nnodes: self.nnodes,
            node_rank: self.node_rank,
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
        }
    }
}

#[derive(Subcommand)]
enum DataCommand {
    /// Each example's rendered text (trained spans in ⟦ ⟧), token ids and loss mask.
    Inspect {
        /// Model or tokenizer directory (tokenizer.json + chat template), or org/name.
        #[arg(long)]
        model: String,
        /// JSONL conversations {"messages": [...], "tools": [...]}.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object per example instead of the annotated text.
        #[arg(long)]
        json: bool,
        /// Show at most this many examples.
        #[arg(long, default_value_t = 3)]
        limit: usize,
        /// Template variables as a JSON object, as SFT's data.chat_template_kwargs, e.g.
        /// '{"enable_thinking": false}'. Default: none (apply_chat_template without kwargs).
        #[arg(long, value_name = "JSON")]
        chat_template_kwargs: Option<String>,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum EvalCommand {
    /// Grade predictions, or run the agent with a model and grade its patches: each patch is applied
    /// in a fresh container of its instance's image, the tests run, the log graded.
    /// Writes logs/run_evaluation/{run_id}/{model}/{instance_id}/ and {model}.{run_id}.json; with
    /// --model also runs/{run_id}/ (predictions.jsonl, trajectories/, sft.jsonl, sft.resolved.jsonl).
    #[command(group(clap::ArgGroup::new("source").required(true).args(["predictions", "model", "oracle", "endpoint"])))]
    Swebench {
        /// Instances: parquet, JSONL or JSON (e.g. tasks/bundled.jsonl).
        #[arg(long)]
        dataset: PathBuf,
        /// Predictions file (JSON list, dict by instance id, JSONL) or `gold`.
        #[arg(long)]
        predictions: Option<String>,
        /// Run the agent with this model (HF directory or org/name) on each instance.
        #[arg(long)]
        model: Option<String>,
        /// Run the agent loop with the gold oracle instead of a model (gold SFT trajectories): a
        /// one-line fix as one `str_replace` edit then `finish`, other fixes by `git apply`.
        #[arg(long, requires = "tokenizer")]
        oracle: bool,
        /// With --oracle or --endpoint: the tokenizer directory (tokenizer.json + chat template) or
        /// org/name the prompts are rendered and the token records made with, e.g.
        /// assets/tiny-tokenizer, or the served model's own directory.
        #[arg(long, conflicts_with_all = ["model", "predictions"])]
        tokenizer: Option<String>,
        /// Run the agent on a model served by any OpenAI-compatible server (vLLM, SGLang, forge
        /// serve; base URL, e.g. http://127.0.0.1:8000): each turn is POST /v1/completions with the
        /// prompt as token ids rendered with --tokenizer's chat template.
        #[arg(long, value_name = "URL", conflicts_with_all = ["model", "oracle"], requires = "tokenizer")]
        endpoint: Option<String>,
        /// With --endpoint: the served model's name (vLLM's --served-model-name).
        #[arg(long, value_name = "NAME", requires = "endpoint", conflicts_with_all = ["model", "oracle", "predictions"])]
        served_model: Option<String>,
        /// With --endpoint: the environment variable holding the API key, sent as
        /// `Authorization: Bearer` [default: no key].
        #[arg(long, value_name = "VAR", requires = "endpoint", conflicts_with_all = ["model", "oracle", "predictions"])]
        api_key_env: Option<String>,
        /// With --endpoint: retries of a request after a connection error, 429 or 5xx, with
        /// exponential backoff from 1 s up to 30 s; after them the episode is an infrastructure
        /// error (run again on resume).
        #[arg(long, value_name = "N", default_value_t = 6, requires = "endpoint", conflicts_with_all = ["model", "oracle", "predictions"])]
        endpoint_retries: u32,
        /// With --endpoint: timeout of one request in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 900, requires = "endpoint", conflicts_with_all = ["model", "oracle", "predictions"])]
        endpoint_timeout: u64,
        #[arg(long)]
        run_id: String,
        /// Agent: assistant turns per instance at most [default: 35].
        #[arg(long)]
        max_turns: Option<usize>,
        /// Agent: sampling temperature, 0 = greedy [default: 0].
        #[arg(long)]
        temperature: Option<f32>,
        /// Agent: context budget in tokens, prompt and generation [default: 32768].
        #[arg(long)]
        max_context_tokens: Option<usize>,
        /// Agent: sampling seed; turn k uses seed + k [default: 0].
        #[arg(long)]
        seed: Option<u64>,
        /// Agent: prompts and tools shown to the model — standard, or minimal (terse prompts for
        /// tiny models; must match the scaffold the model was trained with) [default: standard].
        #[arg(long)]
        scaffold: Option<forge_agent::Scaffold>,
        /// Agent: model dtype [default: f32].
        #[arg(long, value_enum)]
        dtype: Option<CliDType>,
        /// Agent: cpu, or cuda / cuda:N with a CUDA build [default: cpu].
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Agent: prefill every turn's whole prompt instead of reusing the KV cache of the
        /// episode's earlier turns (same results up to float summation order; slower).
        #[arg(long)]
        no_prefix_caching: bool,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Per-instance test timeout in seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Grading semantics: v4 (swebench 4.1.0, default) or v5.
        #[arg(long, default_value = "v4")]
        grading: String,
        /// Only these instances (space-separated).
        #[arg(long, num_args = 1..)]
        instance_ids: Vec<String>,
        /// When instance images are pulled from their registries: never, missing (default) or
        /// always (each image once per run).
        #[arg(long, value_name = "POLICY", default_value = "missing")]
        pull: forge_sandbox::PullPolicy,
        /// Directory under which logs/ and the summary go.
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        #[command(flatten)]
        container: ContainerArgs,
    },
    /// Re-grade existing test_output.txt logs without Docker and rewrite the reports.
    Regrade {
        #[arg(long)]
        dataset: PathBuf,
        /// The `{model}` level of logs/run_evaluation/{run_id}/{model}.
        #[arg(long)]
        logs: PathBuf,
        #[arg(long)]
        run_id: String,
        #[arg(long, default_value = "v4")]
        grading: String,
    },
}

/// Resources of task containers over the per-source defaults (forge's own tasks: 2 GiB, 1 CPU,
/// 512 pids; dataset tasks: 16 GiB, 4 CPUs at most the host's, 4096 pids).
#[derive(clap::Args, Debug, Clone, Default)]
struct ContainerArgs {
    /// Memory of each task container, e.g. 8G, 512M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// CPUs of each task container (fractions allowed; capped at the host's).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Processes and threads of each task container at most.
    #[arg(long, value_name = "N")]
    pids: Option<i64>,
    /// Network for eval scripts: on as the official harnesses run them (default for dataset
    /// tasks: `pip install -e .` and tests that reach the network), off for forge's own tasks.
    /// Agents never get network.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    eval_network: Option<bool>,
    /// A Docker engine to run task containers on (repeatable: a fleet; default: $DOCKER_HOST or
    /// the local socket). TLS with certificates from the directory tls= names (ca.pem, cert.pem,
    /// key.pem), or from DOCKER_CERT_PATH when DOCKER_TLS_VERIFY is set; capacity bounds
    /// max_containers=, cpus=, memory=. Images reach an engine that lacks them from one that has
    /// them (docker save | docker load).
    #[arg(long = "docker-host", value_name = "ENDPOINT[,max_containers=N,cpus=N,memory=SIZE,tls=DIR]")]
    docker_hosts: Vec<forge_sandbox::EngineSpec>,
}

impl ContainerArgs {
    fn overrides(&self) -> forge_swe::ContainerOverrides {
        forge_swe::ContainerOverrides {
            memory_bytes: self.memory.map(|m| m as i64),
            cpus: self.cpus,
            pids: self.pids,
            eval_network: self.eval_network,
        }
    }
}

/// `8G`, `512M`, `1.5G`, `100K` or bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let scale: u64 = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("size {s:?}: use a number with K, M, G or T (e.g. 8G)")),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("size {s:?}: use a number with K, M, G or T (e.g. 8G)"))?;
    if !(n > 0.0) {
        return Err(format!("size {s:?} must be positive"));
    }
    Ok((n * scale as f64) as u64)
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Resolve a dataset's records (SWE-bench as the hub ships it, SWE-Gym, SWE-smith, R2E-Gym,
    /// SWE-rebench, forge's own) into runnable tasks: image, start state, environment, eval script
    /// or test command, log parser, tests. Every command that reads tasks resolves them this way;
    /// this one shows what will run.
    Resolve {
        #[arg(long)]
        dataset: PathBuf,
        /// The dataset the records come from (auto: told per record by its fields).
        #[arg(long, default_value = "auto")]
        source: String,
        /// Write the resolved records as JSONL here (default: a summary on stdout only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Eval-readiness: with the test patch, FAIL_TO_PASS fail and PASS_TO_PASS pass before the gold
    /// patch, and all pass after it.
    Validate {
        #[arg(long)]
        tasks: PathBuf,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(long, default_value = "v4")]
        grading: String,
        /// When instance images are pulled from their registries: never, missing (default) or
        /// always (each image once per run).
        #[arg(long, value_name = "POLICY", default_value = "missing")]
        pull: forge_sandbox::PullPolicy,
    },
    /// SPICE-style labels on SWE-bench Verified's 0 (best) to 3 scale: difficulty (gold patch
    /// size, solve rate), test validity (FAIL_TO_PASS count, and which patched lines those tests
    /// run, traced in the instance's container) and clarity (identifiers of the fix named, a
    /// reproduction, length; an LLM rubric optionally). Writes each record with a `labels` object
    /// as JSONL and prints the distribution. Thresholds: forge_swe::labels.
    Label {
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// `forge sample`'s attempts.jsonl or solve_rates.jsonl (or its output directory): the
        /// solve rate moves the difficulty.
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Trace the FAIL_TO_PASS tests in Docker (on, the default) or label without (off).
        #[arg(long, value_name = "on|off", value_parser = parse_on_off, default_value = "on", action = clap::ArgAction::Set)]
        coverage: bool,
        /// Instances traced at once (one container each).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Seconds one instance's tests may run under the tracer.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(long, value_name = "POLICY", default_value = "missing")]
        pull: forge_sandbox::PullPolicy,
        /// An OpenAI-compatible endpoint (base URL) asked SWE-bench Verified's "how
        /// well-specified is the issue" question; combined with the concrete clarity score.
        #[arg(long, requires = "rubric_model")]
        rubric_endpoint: Option<String>,
        /// The `model` of the rubric requests.
        #[arg(long, requires = "rubric_endpoint")]
        rubric_model: Option<String>,
        /// The environment variable holding the rubric endpoint's API key.
        #[arg(long, value_name = "VAR", requires = "rubric_endpoint")]
        rubric_api_key_env: Option<String>,
    },
    /// Keep the labelled instances (`forge tasks label`'s output) whose scores are at most the
    /// thresholds; "≤ 1 on all three" is --max-difficulty 1 --max-test-validity 1 --max-clarity 1.
    Filter {
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=3))]
        max_difficulty: Option<u8>,
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=3))]
        max_test_validity: Option<u8>,
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=3))]
        max_clarity: Option<u8>,
    },
}

#[derive(Subcommand)]
enum FoundryCommand {
    /// Walk a repository's first-parent history; every commit that changes Python source and
    /// tests gets an environment image (dependencies as of its date), its tests run before and
    /// after, and those with FAIL_TO_PASS tests that `forge tasks validate` accepts are written
    /// in the SWE-bench schema. A report of every commit (drop reasons, environment attempts,
    /// images, bytes per task) goes to `<out>.report.json`.
    Mine {
        /// A local repository or a URL git can clone.
        #[arg(long)]
        repo: String,
        /// The tasks, JSONL.
        #[arg(long)]
        out: PathBuf,
        /// Only commits authored on or after this date (e.g. 2023-01-01).
        #[arg(long)]
        since: Option<String>,
        /// At most N candidates (the newest) are built and checked.
        #[arg(long)]
        max: Option<usize>,
        /// Candidates checked at once.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// The revision whose history is walked.
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// `owner/name` of the tasks (default: from the URL or the origin remote).
        #[arg(long)]
        name: Option<String>,
        /// CA bundle that build containers trust (default: SSL_CERT_FILE, else the system bundle).
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// Keep one image per environment (no moving of tasks onto shared images).
        #[arg(long)]
        no_prune: bool,
        /// Environment strategies tried before a candidate is dropped.
        #[arg(long, default_value_t = 6)]
        max_attempts: usize,
        /// Seconds per test run.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// An OpenAI-compatible server (`http://host:8000`, `/v1` optional) that rewrites each
        /// task's commit message into an issue-style statement (refused if it quotes the fix).
        #[arg(long, requires = "rewrite_model")]
        rewrite_endpoint: Option<String>,
        /// The model the rewrite endpoint serves.
        #[arg(long, requires = "rewrite_endpoint")]
        rewrite_model: Option<String>,
        /// Environment variable holding the rewrite endpoint's API key.
        #[arg(long, value_name = "VAR")]
        api_key_env: Option<String>,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Load the images of `docker save` archives (machines without registry access); prints the
    /// tags loaded.
    Load {
        #[arg(required = true, value_name = "FILE.tar")]
        files: Vec<PathBuf>,
    },
    /// Pull images (retrying rate limits and transient registry failures) and print each one's
    /// id and digest; forge records them for `forge images prune`.
    Pull {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// missing: only images not present; always: refresh present ones too.
        #[arg(long, value_name = "POLICY", default_value = "missing")]
        pull: forge_sandbox::PullPolicy,
    },
    /// Remove the least recently used images forge pulled until they take at most --budget
    /// (never images forge did not pull, never images a container uses).
    Prune {
        /// Disk budget: bytes, or with K, M, G, T (e.g. 200G, 500M).
        #[arg(long, value_name = "SIZE", value_parser = forge_sandbox::parse_size)]
        budget: u64,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Run tool calls (`{"name": ..., "arguments": {...}}` per line) in a fresh container and print
    /// one JSON observation per call.
    Replay {
        /// Image to start the container from.
        #[arg(long, default_value = forge_sandbox::DEFAULT_IMAGE)]
        image: String,
        /// JSONL file of tool calls.
        #[arg(long)]
        calls: PathBuf,
        /// Working directory of the shell (default /).
        #[arg(long)]
        workdir: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecipeKind {
    Sft,
    Rl,
}

/// A config `forge plan` read, typed by its recipe.
#[allow(clippy::large_enum_variant)]
enum Recipe {
    Sft(forge_train::sft::SftConfig),
    Rl(forge_rl::RlConfig),
}

impl RecipeKind {
    /// RL when the config has a section or key only `forge train rl` knows, else SFT.
    fn of_config(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
        let rl_section = ["rollout", "agent", "objective", "engine", "sandbox"].iter().any(|s| table.contains_key(*s));
        let rl_train = table.get("train").and_then(|t| t.get("steps")).is_some();
        Ok(if rl_section || rl_train { Self::Rl } else { Self::Sft })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CliDType {
    F32,
    Bf16,
    F16,
}

impl From<CliDType> for DType {
    fn from(d: CliDType) -> Self {
        match d {
            CliDType::F32 => DType::F32,
            CliDType::Bf16 => DType::BF16,
            CliDType::F16 => DType::F16,
        }
    }
}

fn print_eval_summary(summary: &forge_swe::RunSummary) {
    eprintln!(
        "{} instances: {} resolved, {} unresolved, {} empty patches, {} errors ({:.0} s); report {}",
        summary.total_instances,
        summary.resolved_instances,
        summary.unresolved_instances,
        summary.empty_patch_instances,
        summary.error_instances,
        summary.wall_seconds,
        summary.summary_path.display()
    );
    for (id, reason) in &summary.errors {
        eprintln!("  error {id}: {reason}");
    }
    if let Some(fleet) = summary.fleet.as_ref().filter(|f| f.engines.len() > 1) {
        print_fleet(fleet, summary.engine_reruns);
    }
    if !summary.refused.is_empty() {
        // unresolved by the official count; listed because no test decided them
        eprintln!("{} patches refused by the reward-integrity checks ({} suspected reward hacks):", summary.refused.len(), summary.suspected_reward_hacks);
        for (id, reason) in &summary.refused {
            eprintln!("  refused {id}: {reason}");
        }
    }
}

/// Per Docker engine: containers, image transfers, failures; and the placements that waited.
fn print_fleet(fleet: &forge_sandbox::FleetMetrics, reruns: usize) {
    for e in &fleet.engines {
        eprintln!(
            "  engine {}{}: {} containers (at most {} at once), {} images received ({} MiB, {:.1} s), {} failures",
            e.endpoint,
            if e.up { "" } else { " (down)" },
            e.containers,
            e.peak_containers,
            e.image_transfers,
            e.transfer_bytes >> 20,
            e.transfer_seconds,
            e.failures
        );
    }
    eprintln!("  {} placements waited for room ({:.1} s); {reruns} instances ran again after their engine stopped answering", fleet.placement_waits, fleet.placement_wait_seconds);
}

/// For every command that starts containers: SIGINT/SIGTERM remove this process's containers
/// before it exits (with 130/143), and the containers of forge processes that died without
/// removing theirs (SIGKILL, a crash) are removed first.
fn guard_containers(runtime: &tokio::runtime::Runtime, engines: &[forge_sandbox::EngineSpec]) -> Result<()> {
    forge_sandbox::cleanup::remove_on_signal().context("installing the SIGINT/SIGTERM handler")?;
    let engines = forge_sandbox::EngineSpec::fleet_or_env(engines).map_err(|e| anyhow::anyhow!("--docker-host: {e}"))?;
    runtime.block_on(async {
        for engine in &engines {
            // an unreachable engine is reported by the command itself
            let Ok(rt) = forge_sandbox::Runtime::connect_engine(engine).await else { continue };
            match rt.reap_stale().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(engine = %engine, removed = n, "removed containers left by forge processes that died"),
                Err(e) => tracing::warn!(engine = %engine, error = %e, "could not remove the containers of dead forge processes"),
            }
        }
    });
    Ok(())
}

/// Holds `dir` for this process (see `forge_train::run_lock`): a second command on it refuses.
fn lock_run_dir(dir: &std::path::Path) -> Result<forge_train::run_lock::RunLock> {
    Ok(forge_train::run_lock::RunLock::acquire(dir)?)
}

/// Exit status of `forge train rl` when no step of the run made an update.
const EXIT_NO_UPDATES: i32 = 3;

fn main() -> Result<()> {
    forge_model::forge_kernels::cpu_memory::keep_freed_memory_for_reuse();
    // a data-parallel worker's log lines carry its rank ("worker{rank=1}: ..."); by default only
    // rank 0 logs progress, the others warnings and errors (N copies of the setup say nothing
    // more); RUST_LOG sets every worker's level
    let rank = std::env::var("RANK").ok().and_then(|r| r.parse::<usize>().ok()).filter(|_| std::env::var("WORLD_SIZE").is_ok_and(|w| w != "1"));
    let level = match rank {
        Some(r) if r != 0 => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let _worker = rank.map(|rank| tracing::info_span!("worker", rank).entered());
    match Cli::parse().command {
        Command::Export { checkpoint, out, shard_size, dtype, force } => {
            let shard_size = forge_model::export::parse_size(&shard_size)?;
            let summary = forge_model::export::export(&checkpoint, &out, shard_size, dtype.map(DType::from), force)
                .with_context(|| format!("exporting {}", checkpoint.display()))?;
            eprintln!(
                "exported {} parameters as {} in {} shard(s) to {}",
                summary.parameters,
                forge_model::export::dtype_name(summary.dtype),
                summary.shards,
                out.display()
            );
        }
        Command::Score { model, input, out, dtype, device } => {
            let device = device.open()?;
            let dir = forge_model::weights::resolve_model_dir(&model)?;
            let loaded = forge_model::load_model(&dir, dtype.into(), &device).with_context(|| format!("loading {}", dir.display()))?;
            let mut sink: Box<dyn Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let n = forge_model::score::score_file(&loaded, &dir, &input, &mut sink)?;
            sink.flush()?;
            eprintln!("scored {n} sequence(s)");
        }
        Command::Generate { model, prompt, messages, max_new_tokens, temperature, top_p, top_k, seed, json, dtype, device } => {
            let device = device.open()?;
            let dir = forge_model::weights::resolve_model_dir(&model)?;
            let prompt = match (prompt, messages) {
                (Some(text), _) => forge_engine::generate::Prompt::Text(text),
                (None, Some(path)) => forge_engine::generate::Prompt::Messages(path),
                (None, None) => bail!("give --prompt TEXT or --messages FILE"),
            };
            let params = forge_engine::SamplingParams { max_new_tokens, temperature, top_p, top_k, seed, stop_tokens: Vec::new() };
            let output = forge_engine::generate::generate(&dir, dtype.into(), &device, &prompt, params)
                .with_context(|| format!("generating with {}", dir.display()))?;
            if json {
                println!("{}", serde_json::to_string(&output)?);
            } else {
                println!("{}", output.text);
                eprintln!("{} new token(s), finish reason: {}", output.tokens.len(), output.finish_reason);
            }
        }
        Command::Serve { model, host, port, dtype, device, served_model_name, max_concurrency, max_model_len, kv_cache_memory, block_size } => {
            let device = device.open()?;
            forge_serve::run(forge_serve::ServeOptions {
                model,
                host,
                port,
                dtype: dtype.into(),
                device,
                served_model_name,
                max_concurrency,
                max_model_len,
                kv_cache_memory: kv_cache_memory.map(|size| size.0),
                block_size,
            })?;
        }
        Command::Train { recipe: TrainCommand::Sft(args) } => {
            if !args.docker_hosts.is_empty() {
                bail!("--docker-host places RL rollouts' containers; SFT runs none");
            }
            let (config, resolved) = forge_train::config::load_config::<forge_train::sft::SftConfig>(&args.config, &args.overrides)?;
            if args.print_config {
                print!("{resolved}");
                return Ok(());
            }
            let plan = args.launch_plan();
            if plan.wants_launch() {
                forge_train::distributed::launch::run_workers(&plan)?;
                return Ok(());
            }
            let options = forge_train::sft::SftOptions {
                resume: args.resume,
                stop_after: None,
                distributed: forge_train::Topology::from_env()?,
            };
            let summary = forge_train::sft::run(&config, &resolved, &options)?;
            if options.distributed.as_ref().is_some_and(|t| t.rank != 0) {
                return Ok(());
            }
            eprintln!(
                "sft: {} steps, loss {:.4} -> {:.4}, {:.0} tokens/s; {} examples ({} skipped, {} truncated); model in {}",
                summary.steps,
                summary.first_loss,
                summary.last_loss,
                summary.tokens_per_s,
                summary.data.examples,
                summary.data.skipped_bad,
                summary.data.truncated,
                summary.model_dir.display()
            );
        }
        Command::Plan { config, overrides, kind, nproc_per_node, nnodes, gpu_memory } => {
            let kind = match kind {
                Some(kind) => kind,
                None => RecipeKind::of_config(&config)?,
            };
            let recipe = match kind {
                RecipeKind::Sft => Recipe::Sft(forge_train::config::load_config(&config, &overrides)?.0),
                RecipeKind::Rl => Recipe::Rl(forge_train::config::load_config(&config, &overrides)?.0),
            };
            let model = match &recipe {
                Recipe::Sft(sft) => {
                    sft.validate()?;
                    &sft.model
                }
                Recipe::Rl(rl) => {
                    rl.validate()?;
                    &rl.model
                }
            };
            let architecture = model.architecture()?;
            let device = forge_train::memory::DeviceKind::of_spec(model.device);
            let memory = match (gpu_memory, device) {
                (Some(size), _) => Some(size.0),
                (None, forge_train::memory::DeviceKind::Cpu) => forge_model::device::host_memory_available().map(|bytes| bytes / nproc_per_node.max(1) as u64),
                (None, forge_train::memory::DeviceKind::Cuda) => {
                    let gpu = model.device.open().context("planning for a GPU this machine cannot open: give its memory with --gpu-memory (e.g. 80GiB)")?;
                    forge_model::device::memory_available(&gpu)
                }
            };
            let workers = nproc_per_node * nnodes;
            let plan = match &recipe {
                Recipe::Sft(sft) => forge_train::plan::plan(&forge_train::sft::run_shape(sft, &architecture, device, workers, None), memory),
                Recipe::Rl(rl) => forge_train::plan::plan(&rl.run_shape(&architecture, device, workers), memory),
            };
            let recipe_name = match kind {
                RecipeKind::Sft => "forge train sft",
                RecipeKind::Rl => "forge train rl",
            };
            println!("{} ({recipe_name})\n{plan}", config.display());
            if let Some(short) = &plan.shortfall {
                bail!("does not fit: {}; to fit: {}", short.reason, short.change);
            }
        }
        Command::Train { recipe: TrainCommand::Rl(args) } => {
            let mut overrides = args.overrides.clone();
            if !args.docker_hosts.is_empty() {
                let hosts = toml::Value::try_from(&args.docker_hosts).context("--docker-host")?;
                overrides.push(format!("sandbox.hosts={hosts}"));
            }
            let (config, resolved) = forge_train::config::load_config::<forge_rl::RlConfig>(&args.config, &overrides)?;
            if args.print_config {
                print!("{resolved}");
                return Ok(());
            }
            let plan = args.launch_plan();
            if plan.wants_launch() {
                forge_train::distributed::launch::run_workers(&plan)?;
                return Ok(());
            }
            let options = forge_rl::RlOptions { resume: args.resume, distributed: forge_train::Topology::from_env()?, ..Default::default() };
            let runtime = tokio::runtime::Runtime::new()?;
            guard_containers(&runtime, &config.sandbox.hosts)?;
            let summary = runtime.block_on(forge_rl::run(&config, &resolved, &options))?;
            if options.distributed.as_ref().is_some_and(|t| t.rank != 0) {
                return Ok(());
            }
            eprintln!(
                "rl: {} steps ({} updates), {} trajectories, reward {:.3} -> {:.3}; model in {}",
                summary.steps,
                summary.updates,
                summary.trajectories,
                summary.first_reward,
                summary.last_reward,
                summary.model_dir.display()
            );
            if summary.updates == 0 {
                // a run that trained nothing must not pass for one that did
                eprintln!(
                    "rl: no step made an update: every group was skipped (all its rewards equal, or too few samples left after exclusions; see groups_skipped_* and infrastructure_failures in {}). The model is unchanged.",
                    summary.run_dir.join("metrics.jsonl").display()
                );
                std::process::exit(EXIT_NO_UPDATES);
            }
        }
        Command::Data { command: DataCommand::Inspect { model, data, json, limit, chat_template_kwargs } } => {
            let kwargs = match chat_template_kwargs.as_deref() {
                None => serde_json::Value::Null,
                Some(text) => match serde_json::from_str(text) {
                    Ok(object @ serde_json::Value::Object(_)) => object,
                    _ => bail!("--chat-template-kwargs must be a JSON object, e.g. '{{\"enable_thinking\": false}}', got {text}"),
                },
            };
            let dir = forge_model::weights::resolve_model_dir(&model)?;
            print!("{}", forge_train::sft::inspect(&dir, &data, limit, json, &kwargs)?);
        }
        Command::Eval { command: EvalCommand::Swebench { dataset, predictions: None, model, oracle, tokenizer, endpoint, served_model, api_key_env, endpoint_retries, endpoint_timeout, run_id, max_turns, temperature, max_context_tokens, seed, scaffold, dtype, device, no_prefix_caching, workers, timeout, grading, instance_ids, output_dir, container, pull } } => {
            let chat_dir = match (&model, &tokenizer) {
                (Some(model), _) => forge_model::weights::resolve_model_dir(model)?,
                (None, Some(tokenizer)) => forge_model::weights::resolve_model_dir(tokenizer)?,
                (None, None) => bail!("--tokenizer is required with --oracle"),
            };
            if tokenizer.is_some() && !oracle && endpoint.is_none() {
                bail!("--tokenizer goes with --oracle or --endpoint (--model's directory has its own)");
            }
            if (oracle || endpoint.is_some()) && (dtype.is_some() || device.is_some() || no_prefix_caching) {
                bail!("--dtype, --device and --no-prefix-caching configure a local model: --oracle and --endpoint run none");
            }
            // Qwen3 templates: the non-thinking format the agent is trained in.
            let chat = std::sync::Arc::new(forge_agent::ChatFormat::from_model_dir(&chat_dir, serde_json::json!({"enable_thinking": false}))?.with_scaffold(scaffold.unwrap_or_default()));
            let model_name = model.as_deref().or(served_model.as_deref()).unwrap_or("oracle");
            let mut options = forge_agent::AgentEvalOptions::new(dataset, &run_id, model_name);
            let defaults = forge_agent::AgentConfig::default();
            options.agent = forge_agent::AgentConfig {
                max_turns: max_turns.unwrap_or(defaults.max_turns),
                temperature: temperature.unwrap_or(defaults.temperature),
                max_context_tokens: max_context_tokens.unwrap_or(defaults.max_context_tokens),
                seed: seed.unwrap_or(defaults.seed),
                pull,
                container: container.overrides(),
                ..defaults
            };
            options.workers = workers;
            options.test_timeout = std::time::Duration::from_secs(timeout);
            options.grading = grading.parse().map_err(|e| anyhow::anyhow!("--grading: {e}"))?;
            options.instance_ids = instance_ids;
            options.output_root = output_dir;
            options.engines = container.docker_hosts.clone();
            let _locks = (lock_run_dir(&options.run_dir())?, lock_run_dir(&options.output_root.join("logs/run_evaluation").join(&run_id))?);
            let runtime = tokio::runtime::Runtime::new()?;
            guard_containers(&runtime, &options.engines)?;
            let summary = if oracle {
                let instances = forge_swe::load_instances(&options.dataset)?;
                let policy = std::sync::Arc::new(forge_agent::testing::ScriptedPolicy::edit_oracle(chat.clone(), &instances));
                runtime.block_on(forge_agent::run_agent_eval(policy, chat, &options))?
            } else if let Some(url) = &endpoint {
                let Some(served_model) = &served_model else {
                    bail!("--endpoint needs --served-model NAME: the model name the server serves (vLLM's --served-model-name; GET {url}/v1/models lists them)");
                };
                let api_key = match &api_key_env {
                    None => None,
                    Some(var) => match std::env::var(var) {
                        Ok(key) if !key.is_empty() => Some(key),
                        _ => bail!("--api-key-env {var}: the environment variable {var} is not set"),
                    },
                };
                let config = forge_agent::EndpointConfig {
                    api_key,
                    max_retries: endpoint_retries,
                    request_timeout: std::time::Duration::from_secs(endpoint_timeout),
                    // the workers' episodes are the only requests
                    max_concurrency: workers.max(1),
                    ..forge_agent::EndpointConfig::new(url, served_model)
                };
                let policy = std::sync::Arc::new(forge_agent::EndpointPolicy::new(config, chat.clone())?);
                let models = runtime.block_on(policy.served_models()).with_context(|| format!("--endpoint {url}: listing its models (GET /v1/models)"))?;
                let Some(served) = models.iter().find(|m| m.id == *served_model) else {
                    bail!("--served-model {served_model} is not served at {url}; it serves {:?}", models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>());
                };
                if let Some(max_model_len) = served.max_model_len {
                    // the server refuses prompts plus max_tokens beyond its context
                    options.agent.max_context_tokens = options.agent.max_context_tokens.min(max_model_len);
                }
                let mut summary = runtime.block_on(forge_agent::run_agent_eval(policy.clone(), chat, &options))?;
                let usage = policy.usage();
                eprintln!(
                    "endpoint: {} generations, {} prompt + {} completion tokens (its usage); {} retries, {} failed requests{}",
                    usage.generations,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.retries,
                    usage.failed_requests,
                    if usage.generations_without_logprobs > 0 {
                        format!("; {} generations without log-probs ({} re-tokenised from text): their token records' log-probs are 0", usage.generations_without_logprobs, usage.generations_without_token_ids)
                    } else {
                        String::new()
                    }
                );
                summary.endpoint = Some(usage);
                summary
            } else {
                let model_weights = std::sync::Arc::new(forge_model::load_model(&chat_dir, dtype.unwrap_or(CliDType::F32).into(), &device.unwrap_or_default().open()?)?);
                // the model cannot attend beyond its positions, whatever budget was asked for
                options.agent.max_context_tokens = options.agent.max_context_tokens.min(model_weights.config().max_context());
                // every worker's agent shares one decoding batch
                let policy = std::sync::Arc::new(forge_engine::EngineHandle::start(model_weights, forge_engine::EngineConfig { max_batch_size: workers.max(1), prefix_caching: !no_prefix_caching, ..Default::default() })?);
                let summary = runtime.block_on(forge_agent::run_agent_eval(policy.clone(), chat, &options))?;
                let prefill = policy.prefill_stats();
                eprintln!(
                    "engine: {} prompt tokens, {} of them ({:.0}%) from the prefix cache; {:.0} s decoding",
                    prefill.prompt_tokens,
                    prefill.reused_tokens,
                    100.0 * prefill.reused_tokens as f64 / prefill.prompt_tokens.max(1) as f64,
                    policy.busy_seconds()
                );
                summary
            };
            eprintln!(
                "agent: {} episodes run, {} reused; statuses {:?}; policy failures by cause {:?}; {} agent steps in {:.0} s; run {}",
                summary.episodes_run,
                summary.episodes_reused,
                summary.statuses,
                summary.failure_causes,
                summary.agent_steps,
                summary.agent_wall_seconds,
                summary.run_dir.display()
            );
            print_eval_summary(&summary.grading);
        }
        Command::Eval { command: EvalCommand::Swebench { dataset, predictions: Some(predictions), run_id, max_turns, temperature, max_context_tokens, seed, scaffold, dtype, device, no_prefix_caching, workers, timeout, grading, instance_ids, output_dir, container, pull, .. } } => {
            if max_turns.is_some() || temperature.is_some() || max_context_tokens.is_some() || seed.is_some() || scaffold.is_some() || dtype.is_some() || device.is_some() || no_prefix_caching {
                bail!("--max-turns, --temperature, --max-context-tokens, --seed, --scaffold, --dtype, --device and --no-prefix-caching configure the agent: use them with --model (or --oracle), not --predictions");
            }
            let mut options = forge_swe::EvalOptions::new(dataset, forge_swe::PredictionsSource::parse(&predictions), &run_id);
            options.pull = pull;
            options.workers = workers;
            options.timeout = std::time::Duration::from_secs(timeout);
            options.grading = grading.parse().map_err(|e| anyhow::anyhow!("--grading: {e}"))?;
            options.instance_ids = instance_ids;
            options.output_root = output_dir;
            options.container = container.overrides();
            options.engines = container.docker_hosts.clone();
            let _lock = lock_run_dir(&options.output_root.join("logs/run_evaluation").join(&run_id))?;
            let runtime = tokio::runtime::Runtime::new()?;
            guard_containers(&runtime, &options.engines)?;
            let summary = runtime.block_on(forge_swe::run_evaluation(&options))?;
            print_eval_summary(&summary);
        }
        Command::Eval { command: EvalCommand::Regrade { dataset, logs, run_id, grading } } => {
            let grading = grading.parse().map_err(|e| anyhow::anyhow!("--grading: {e}"))?;
            let summary = forge_swe::regrade(&dataset, &logs, &run_id, grading)?;
            eprintln!(
                "re-graded {} instances: {} resolved; report {}",
                summary.completed_instances,
                summary.resolved_instances,
                summary.summary_path.display()
            );
        }
        Command::Sample { dataset, model, endpoint, served_model, api_key_env, tokenizer, attempts, max_solutions_per_instance, temperature, seed, out, workers, resume, instance_ids, max_turns, max_context_tokens, scaffold, infra_retries, timeout, grading, dtype, device, container, pull } => {
            let chat_dir = forge_model::weights::resolve_model_dir(model.as_deref().or(tokenizer.as_deref()).context("--endpoint needs --tokenizer")?)?;
            let chat = std::sync::Arc::new(forge_agent::ChatFormat::from_model_dir(&chat_dir, serde_json::json!({"enable_thinking": false}))?.with_scaffold(scaffold.unwrap_or_default()));
            let mut options = forge_agent::SampleOptions::new(dataset, out);
            options.agent = forge_agent::AgentConfig { max_turns, max_context_tokens, temperature, seed, pull, container: container.overrides(), ..Default::default() };
            (options.attempts, options.max_solutions_per_instance, options.workers, options.resume, options.instance_ids, options.infra_retries) = (attempts, max_solutions_per_instance, workers, resume, instance_ids, infra_retries);
            options.test_timeout = std::time::Duration::from_secs(timeout);
            options.grading = grading.parse().map_err(|e| anyhow::anyhow!("--grading: {e}"))?;
            options.engines = container.docker_hosts.clone();
            let _lock = lock_run_dir(&options.out_dir)?;
            let runtime = tokio::runtime::Runtime::new()?;
            guard_containers(&runtime, &options.engines)?;
            let summary = if let (Some(url), Some(served_model)) = (&endpoint, &served_model) {
                let api_key = match &api_key_env {
                    None => None,
                    Some(var) => Some(std::env::var(var).ok().filter(|k| !k.is_empty()).with_context(|| format!("--api-key-env {var}: the environment variable {var} is not set"))?),
                };
                let config = forge_agent::EndpointConfig { api_key, max_concurrency: workers.max(1), ..forge_agent::EndpointConfig::new(url, served_model) };
                let (policy, max_model_len) = runtime.block_on(forge_agent::sample::connect_endpoint(config, chat.clone()))?;
                options.agent.max_context_tokens = options.agent.max_context_tokens.min(max_model_len.unwrap_or(usize::MAX));
                runtime.block_on(forge_agent::run_sampling(std::sync::Arc::new(policy), chat, &options))?
            } else {
                let weights = std::sync::Arc::new(forge_model::load_model(&chat_dir, dtype.into(), &device.open()?)?);
                options.agent.max_context_tokens = options.agent.max_context_tokens.min(weights.config().max_context());
                let policy = std::sync::Arc::new(forge_engine::EngineHandle::start(weights, forge_engine::EngineConfig { max_batch_size: workers.max(1), ..Default::default() })?);
                runtime.block_on(forge_agent::run_sampling(policy, chat, &options))?
            };
            eprintln!(
                "sample: {} attempts run, {} reused, {} skipped; {} resolved over {} of {} instances; {} SFT records in {}; {} infrastructure retries",
                summary.attempts_run,
                summary.attempts_reused,
                summary.attempts_skipped,
                summary.resolved,
                summary.instances_solved,
                summary.instances,
                summary.sft_records,
                summary.out_dir.join("sft.jsonl").display(),
                summary.infra_retries
            );
            for (id, attempt, error) in &summary.infra_failures {
                eprintln!("  infrastructure failure {id} attempt {attempt} (run again by --resume): {error}");
            }
        }
        Command::Tasks { command: TasksCommand::Resolve { dataset, source, out } } => {
            let source = match source.as_str() {
                "auto" => None,
                name => Some(name.parse::<forge_swe::resolve::Source>().map_err(|e| anyhow::anyhow!("--source: {e}"))?),
            };
            let tasks = forge_swe::load_instances_from(&dataset, source)?;
            for t in &tasks {
                forge_swe::resolve::check_runnable(t).map_err(|e| anyhow::anyhow!("{}: {e}", dataset.display()))?;
            }
            let mut by_source = std::collections::BTreeMap::<String, usize>::new();
            for t in &tasks {
                *by_source.entry(forge_swe::resolve::Source::of(t).to_string()).or_default() += 1;
            }
            if let Some(out) = &out {
                forge_swe::save_instances_jsonl(out, &tasks)?;
            }
            println!(
                "resolved {} tasks ({}){}",
                tasks.len(),
                by_source.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", "),
                out.map(|o| format!("; written to {}", o.display())).unwrap_or_default()
            );
        }
        Command::Tasks { command: TasksCommand::Validate { tasks, workers, timeout, grading, pull } } => {
            let grading = grading.parse().map_err(|e| anyhow::anyhow!("--grading: {e}"))?;
            let runtime = tokio::runtime::Runtime::new()?;
            guard_containers(&runtime, &[])?;
            let results = runtime.block_on(forge_swe::validate_file(
                &tasks,
                workers,
                std::time::Duration::from_secs(timeout),
                grading,
                pull,
            ))?;
            let failed: Vec<_> = results.iter().filter(|r| !r.ok).collect();
            for r in &results {
                println!("{} {}{}", if r.ok { "ok  " } else { "FAIL" }, r.instance_id, if r.ok { String::new() } else { format!(": {}", r.problems.join("; ")) });
            }
            if !failed.is_empty() {
                bail!("{} of {} tasks are not eval-ready", failed.len(), results.len());
            }
        }
        Command::Tasks { command: TasksCommand::Label { dataset, out, samples, coverage, workers, timeout, pull, rubric_endpoint, rubric_model, rubric_api_key_env } } => {
            let samples = match &samples {
                Some(path) => forge_swe::labels::load_samples(path)?,
                None => Default::default(),
            };
            let rubric = match (rubric_endpoint, rubric_model) {
                (Some(url), Some(model)) => {
                    let api_key = match &rubric_api_key_env {
                        Some(var) => Some(std::env::var(var).ok().filter(|k| !k.is_empty()).with_context(|| format!("--rubric-api-key-env {var}: the environment variable {var} is not set"))?),
                        None => None,
                    };
                    Some(forge_swe::chat::ChatEndpoint { api_key, ..forge_swe::chat::ChatEndpoint::new(&url, &model) })
                }
                _ => None,
            };
            let opts = forge_swe::labels::LabelOptions { coverage, workers, timeout: std::time::Duration::from_secs(timeout), samples, rubric, pull, ..Default::default() };
            let runtime = tokio::runtime::Runtime::new()?;
            if coverage {
                guard_containers(&runtime, &[])?;
            }
            let summary = runtime.block_on(forge_swe::labels::label_file(&dataset, &out, &opts))?;
            println!("labelled {} instances into {}", summary.instances, out.display());
            print!("{}", summary.distribution);
            if !summary.coverage_errors.is_empty() {
                for (id, why) in &summary.coverage_errors {
                    eprintln!("  coverage not measured for {id}: {why}");
                }
                bail!("the coverage of {} of {} instances could not be measured (their test_validity has coverage_error and counts as unmeasured); fix the cause above and label again, or pass --coverage off", summary.coverage_errors.len(), summary.instances);
            }
        }
        Command::Tasks { command: TasksCommand::Filter { dataset, out, max_difficulty, max_test_validity, max_clarity } } => {
            let thresholds = forge_swe::labels::Thresholds { difficulty: max_difficulty, test_validity: max_test_validity, clarity: max_clarity };
            let summary = forge_swe::labels::filter_file(&dataset, &out, &thresholds)?;
            println!("kept {} of {} instances ({} dropped) into {}", summary.kept, summary.kept + summary.dropped, summary.dropped, out.display());
            println!("input:");
            print!("{}", summary.distribution);
            println!("kept:");
            print!("{}", summary.kept_distribution);
        }
        Command::Foundry {
            command:
                FoundryCommand::Mine { repo, out, since, max, workers, rev, name, ca_bundle, no_prune, max_attempts, timeout, rewrite_endpoint, rewrite_model, api_key_env },
        } => {
            let rewrite = match (rewrite_endpoint, rewrite_model) {
                (Some(url), Some(model)) => {
                    let mut ep = forge_swe::chat::ChatEndpoint::new(&url, &model);
                    if let Some(var) = &api_key_env {
                        ep.api_key = Some(std::env::var(var).with_context(|| format!("--api-key-env {var}: the variable is not set"))?);
                    }
                    Some(ep)
                }
                _ => None,
            };
            let opts = forge_swe::foundry::MineOptions {
                repo,
                rev,
                since,
                max,
                workers,
                name,
                network: forge_swe::foundry::env::BuildNetwork::from_host(ca_bundle),
                max_attempts,
                test_timeout: std::time::Duration::from_secs(timeout),
                prune: !no_prune,
                rewrite,
                ..Default::default()
            };
            let runtime = tokio::runtime::Runtime::new()?;
            guard_containers(&runtime, &[])?;
            let rt = runtime.block_on(forge_sandbox::Runtime::connect())?;
            let (tasks, report) = runtime.block_on(forge_swe::foundry::mine(&rt, &opts))?;
            forge_swe::save_instances_jsonl(&out, &tasks)?;
            let report_path = forge_swe::foundry::report_path(&out);
            std::fs::write(&report_path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", report_path.display()))?;
            println!(
                "{}: {} commits scanned, {} candidates ({} checked), {} eval-ready tasks -> {}",
                report.repo, report.commits_scanned, report.candidates, report.candidates_checked, report.tasks, out.display()
            );
            for (reason, n) in &report.drop_reasons {
                println!("  {n:>5}  {reason}");
            }
            let mib = |b: f64| b / (1u64 << 20) as f64;
            println!(
                "statements rewritten: {}; images: {} -> {} after pruning ({} moves of {} tried); {:.1} MiB per task shared vs {:.1} MiB one image per task; {:.1} min; report {}",
                report.statements_rewritten,
                report.images.images_before,
                report.images.images_after,
                report.images.moves.len(),
                report.images.moves_tried,
                mib(report.images.bytes_per_task),
                mib(report.images.baseline_bytes_per_task),
                report.minutes,
                report_path.display()
            );
        }
        Command::Images { command: ImagesCommand::Load { files } } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let rt = runtime.block_on(forge_sandbox::Runtime::connect())?;
            for file in &files {
                for name in runtime.block_on(rt.load_images(file))? {
                    println!("{name}");
                }
            }
        }
        Command::Images { command: ImagesCommand::Pull { images, pull } } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let rt = runtime.block_on(forge_sandbox::Runtime::connect())?;
            for image in &images {
                let record = runtime.block_on(rt.ensure_image(image, pull, |_| {}))?;
                println!("{} {} {} {:.1} MiB", record.name, record.id, record.digest.as_deref().unwrap_or("-"), record.size as f64 / (1 << 20) as f64);
            }
        }
        Command::Images { command: ImagesCommand::Prune { budget } } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let rt = runtime.block_on(forge_sandbox::Runtime::connect())?;
            let report = runtime.block_on(rt.prune_images(budget))?;
            for r in &report.removed {
                println!("removed {} ({:.1} MiB)", r.name, r.size as f64 / (1 << 20) as f64);
            }
            for name in &report.in_use {
                println!("kept {name}: a container uses it");
            }
            eprintln!(
                "freed {:.1} MiB; the images forge pulled take {:.1} MiB (budget {:.1} MiB; state {})",
                report.freed_bytes as f64 / (1 << 20) as f64,
                report.remaining_bytes as f64 / (1 << 20) as f64,
                budget as f64 / (1 << 20) as f64,
                rt.image_state_path().display()
            );
        }
        Command::Sandbox { command: SandboxCommand::Replay { image, calls, workdir } } => {
            let runtime = tokio::runtime::Runtime::new()?;
            guard_containers(&runtime, &[])?;
            let summary = runtime.block_on(forge_sandbox::replay(&image, &calls, workdir.as_deref(), std::io::stdout().lock()))?;
            eprintln!("replayed {} call(s){}", summary.calls, if summary.finished { ", finished" } else { "" });
        }
    }
    Ok(())
}
