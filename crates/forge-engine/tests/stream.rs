//! Streamed generation (`EngineHandle::generate_stream`): the same tokens and log-probs as a plain
//! generation, delivered one by one, and dropping the stream ends the sequence.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device};
use forge_engine::{EngineConfig, EngineHandle, SamplingParams, StreamedToken};

fn engine(max_batch_size: usize, block_size: usize) -> EngineHandle {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gqa2-untied-f32/model");
    let model = Arc::new(forge_model::load_model(&dir, DType::F32, &Device::Cpu).unwrap());
    EngineHandle::start(model, EngineConfig { max_batch_size, block_size, ..Default::default() }).unwrap()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn prompt(len: usize, salt: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 37 + salt * 101 + 3) % 480) as u32).collect()
}

#[test]
fn streamed_tokens_are_those_of_the_whole_generation() {
    let engine = engine(4, 16);
    let cases = [
        (prompt(9, 1), SamplingParams { max_new_tokens: 20, ..Default::default() }),
        (prompt(14, 2), SamplingParams { max_new_tokens: 25, temperature: 0.9, top_k: 40, seed: 5, ..Default::default() }),
        // a stop token the model samples early ends the stream with it
        (prompt(6, 3), SamplingParams { max_new_tokens: 30, stop_tokens: (0..512).filter(|t| t % 3 == 0).collect(), ..Default::default() }),
    ];
    block_on(async {
        for (prompt, params) in cases {
            let whole = engine.generate(prompt.clone(), params.clone()).await.unwrap();
            // streamed while another request shares the batch
            let other = engine.generate(prompt.iter().rev().copied().collect(), params.clone());
            let streamed = async {
                let mut stream = engine.generate_stream(prompt.clone(), params.clone()).unwrap();
                let mut received = Vec::new();
                while let Some(token) = stream.next_token().await {
                    received.push(token);
                }
                (received, stream.finish().await.unwrap())
            };
            let ((received, finished), other) = tokio::join!(streamed, other);
            other.unwrap();
            assert_eq!(finished, whole);
            let expected: Vec<StreamedToken> = whole.tokens.iter().zip(&whole.logprobs).map(|(&token, &logprob)| StreamedToken { token, logprob }).collect();
            assert_eq!(received, expected);
        }
    });
}

#[test]
fn a_dropped_stream_ends_its_sequence() {
    // One place in the batch, blocks of 4 with prefix caching: every whole block a sequence
    // computed stays cached after it ends, so the cache tells how far a sequence ran.
    let long = SamplingParams { max_new_tokens: 119, ..Default::default() };
    let short = SamplingParams { max_new_tokens: 4, ..Default::default() };
    let prompt = prompt(8, 4);
    block_on(async {
        // the control runs to the end of the context: 8 + 119 of 128 positions, long enough for
        // the drop below to land first
        let whole = engine(1, 4).generate(prompt.clone(), long.clone()).await.unwrap();
        assert_eq!(whole.tokens.len(), 119);
        let engine = engine(1, 4);
        let mut stream = engine.generate_stream(prompt.clone(), long.clone()).unwrap();
        for _ in 0..3 {
            stream.next_token().await.unwrap();
        }
        drop(stream);
        // a prompt extending the whole generation finds only the blocks computed before the drop
        // (had the sequence run on, 124 of its 126 computed positions)
        let extended = [prompt.clone(), whole.tokens.clone()].concat();
        let next = engine.generate(extended, short.clone()).await.unwrap();
        assert_eq!(next.tokens.len(), 1, "the context's last position");
        let reused = engine.prefill_stats().reused_tokens;
        assert!(reused < 124, "the dropped sequence ran on to the end of the context: {reused} positions reused");
        assert_eq!(engine.kv_cache_stats().blocks_in_use, 0);
    });
}
