//! `forge score`: per-token log-probabilities of sequences under a model (perplexity, data filtering,
//! and the hook by which any reference can check our numerics).

use std::io::{BufRead, Write};
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;
use crate::{ModelError, Qwen3ForCausalLM, Result};

/// One input line: `{"tokens": [ids]}` or `{"text": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreInput {
    tokens: Option<Vec<u32>>,
    text: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ScoreOutput {
    /// `log p(token_t | tokens_<t)` for t ≥ 1.
    pub logprobs: Vec<f32>,
    pub sum: f64,
    /// `-sum / len(logprobs)`; null for a sequence of fewer than two tokens.
    pub mean_nll: Option<f64>,
}

/// Reads all token sequences of a JSONL input, tokenizing text lines. Errors name the line.
pub fn read_inputs(reader: impl BufRead, source: &str, tokenizer: impl Fn() -> Result<Tokenizer>) -> Result<Vec<Vec<u32>>> {
    let mut sequences = Vec::new();
    let mut tok: Option<Tokenizer> = None;
    for (number, line) in reader.lines().enumerate() {
        let at = |reason: String| ModelError::Invalid(format!("{source}:{}: {reason}", number + 1));
        let line = line.map_err(|e| at(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let input: ScoreInput =
            serde_json::from_str(&line).map_err(|e| at(format!("expected {{\"tokens\": [ids]}} or {{\"text\": \"...\"}}: {e}")))?;
        let ids = match (input.tokens, input.text) {
            (Some(ids), None) => ids,
            (None, Some(text)) => {
                if tok.is_none() {
                    tok = Some(tokenizer()?);
                }
                tok.as_ref().expect("set above").encode(&text)?
            }
            _ => return Err(at("give exactly one of \"tokens\" and \"text\"".into())),
        };
        if ids.is_empty() {
            return Err(at("the sequence is empty".into()));
        }
        sequences.push(ids);
    }
    if sequences.is_empty() {
        return Err(ModelError::Invalid(format!("{source}: no input lines; each line must be {{\"tokens\": [ids]}} or {{\"text\": \"...\"}}")));
    }
    Ok(sequences)
}

/// Scores sequences in right-padded batches of at most `batch_tokens` (padded) tokens.
pub fn score(model: &Qwen3ForCausalLM, sequences: &[Vec<u32>], batch_tokens: usize) -> Result<Vec<ScoreOutput>> {
    for (i, ids) in sequences.iter().enumerate() {
        model
            .check_token_ids(ids)
            .map_err(|e| ModelError::Invalid(format!("sequence {}: {e}", i + 1)))?;
    }
    let mut outputs = Vec::with_capacity(sequences.len());
    let mut start = 0;
    while start < sequences.len() {
        let mut end = start + 1;
        let mut longest = sequences[start].len();
        while end < sequences.len() && longest.max(sequences[end].len()) * (end + 1 - start) <= batch_tokens {
            longest = longest.max(sequences[end].len());
            end += 1;
        }
        let batch = &sequences[start..end];
        let padded: Vec<u32> = batch.iter().flat_map(|ids| ids.iter().copied().chain(std::iter::repeat(0)).take(longest)).collect();
        let lengths: Vec<usize> = batch.iter().map(Vec::len).collect();
        let logprobs = if longest < 2 {
            vec![Vec::new(); batch.len()]
        } else {
            let ids = Tensor::from_vec(padded, (batch.len(), longest), model.device())?;
            model.token_logprobs(&ids, &lengths)?
        };
        outputs.extend(logprobs.into_iter().map(|logprobs| {
            let sum: f64 = logprobs.iter().map(|&v| f64::from(v)).sum();
            let mean_nll = (!logprobs.is_empty()).then(|| -sum / logprobs.len() as f64);
            ScoreOutput { logprobs, sum, mean_nll }
        }));
        start = end;
    }
    Ok(outputs)
}

/// Scores a JSONL file of sequences with the model in `model_dir`, writing one JSON line each.
pub fn score_file(model: &Qwen3ForCausalLM, model_dir: &Path, input: &Path, out: &mut dyn Write) -> Result<usize> {
    let file = std::fs::File::open(input).map_err(|e| ModelError::io(input, e))?;
    let sequences = read_inputs(std::io::BufReader::new(file), &input.display().to_string(), || Tokenizer::from_model_dir(model_dir))?;
    let outputs = score(model, &sequences, 4096)?;
    for output in &outputs {
        let line = serde_json::to_string(output).expect("scores serialise");
        writeln!(out, "{line}").map_err(|e| ModelError::io(Path::new("<output>"), e))?;
    }
    Ok(outputs.len())
}
