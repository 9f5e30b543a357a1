//! What the engine benches share: their start, `--name value` arguments and synthetic token ids.

/// Sets up the process like `forge` (freed memory kept for reuse) and returns the command line,
/// or `None` when cargo only lists the benches (`--list`): there is nothing to run then.
pub fn start() -> Option<Vec<String>> {
    forge_model::forge_kernels::cpu_memory::keep_freed_memory_for_reuse();
    let args: Vec<String> = std::env::args().collect();
    (!args.iter().any(|a| a == "--list")).then_some(args)
}

pub fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

pub fn number(args: &[String], name: &str, default: usize) -> usize {
    arg(args, name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `len` token ids spread over the vocabulary, different for each `salt` (the formula of
/// scripts/bench/bench_decode_torch.py's prompts, so both sides of the decode bench feed the same ids).
pub fn tokens(len: usize, salt: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 2_654_435_761 + salt * 40_503) % vocab) as u32).collect()
}
