//! ZeRO stage 3 from the model's side: a sharded model, gathering its weights unit by unit from an
//! in-process stand-in for the data-parallel workers' shards, trains and scores bit-identically
//! to the replicated model (CPU, f32), gathers each layer once for forward and once for backward,
//! never the whole model at once, and refuses what it cannot do by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use forge_model::{Batch, Config, GatherUnit, Gradients, ParamGather, ParamStore, Qwen3ForCausalLM, Result, SequenceStep};

const WORKERS: usize = 3;

/// Every parameter split into `WORKERS` dim-0 row shards (uneven where the rows do not divide),
/// as the workers would hold them; a gather concatenates them and is logged.
struct FakeShards {
    shards: HashMap<String, Vec<Tensor>>,
    /// The names asked for and the bytes returned, per gather.
    gathers: Mutex<Vec<(Vec<String>, usize)>>,
}

impl FakeShards {
    fn new(params: &ParamStore) -> Self {
        let shards = params
            .iter()
            .map(|(name, var)| {
                let rows = var.as_tensor().chunk(WORKERS, 0).unwrap();
                // copies: a shard shares no storage with the replicated model's weights
                (name.to_string(), rows.iter().map(|r| r.copy().unwrap()).collect())
            })
            .collect();
        Self { shards, gathers: Mutex::new(Vec::new()) }
    }

    fn take_log(&self) -> Vec<(Vec<String>, usize)> {
        std::mem::take(&mut self.gathers.lock().unwrap())
    }
}

impl ParamGather for FakeShards {
    fn gather(&self, names: &[String]) -> Result<Vec<Tensor>> {
        let tensors = names.iter().map(|name| Ok(Tensor::cat(&self.shards[name], 0)?)).collect::<Result<Vec<_>>>()?;
        let bytes = tensors.iter().map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum();
        self.gathers.lock().unwrap().push((names.to_vec(), bytes));
        Ok(tensors)
    }
}

fn config(tied: bool) -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/tiny/qwen3-tiny.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["tie_word_embeddings"] = tied.into();
    Config::from_json(&json.to_string()).unwrap()
}

/// The replicated model, the sharded one over the same weights, and its shards.
fn models(tied: bool) -> (Qwen3ForCausalLM, Qwen3ForCausalLM, Arc<FakeShards>) {
    let config = config(tied);
    let params = ParamStore::random(&config, 0.2, 11, DType::F32, &Device::Cpu).unwrap();
    let shards = Arc::new(FakeShards::new(&params));
    let sharded = Qwen3ForCausalLM::sharded(config.clone(), shards.clone(), DType::F32, &Device::Cpu).unwrap();
    (Qwen3ForCausalLM::new(config, params).unwrap(), sharded, shards)
}

fn ids(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (seed + 37 * i) % 512).collect()
}

/// Two rows, the second right-padded, prompts unlabelled.
fn padded_batch() -> Batch {
    let (s, lengths) = (9, [9usize, 5]);
    let input: Vec<u32> = lengths.iter().enumerate().flat_map(|(r, &n)| ids(n, r as u32 * 100).into_iter().chain(std::iter::repeat_n(0, s - n))).collect();
    let mask: Vec<u32> = lengths.iter().flat_map(|&n| (0..s).map(move |j| u32::from(j < n))).collect();
    let labels: Vec<i64> = input.iter().zip(&mask).enumerate().map(|(i, (&id, &m))| if m == 0 || i % s < 2 { -100 } else { i64::from(id) }).collect();
    Batch {
        input_ids: Tensor::from_vec(input, (2, s), &Device::Cpu).unwrap(),
        attention_mask: Some(Tensor::from_vec(mask, (2, s), &Device::Cpu).unwrap()),
        labels: Some(Tensor::from_vec(labels, (2, s), &Device::Cpu).unwrap()),
        position_ids: None,
    }
}

/// One row packing sequences of 6, 3 and 4 tokens.
fn packed_batch() -> Batch {
    let lengths = [6usize, 3, 4];
    let input: Vec<u32> = lengths.iter().enumerate().flat_map(|(i, &n)| ids(n, 7 + i as u32 * 50)).collect();
    let positions: Vec<u32> = lengths.iter().flat_map(|&n| 0..n as u32).collect();
    let s = input.len();
    let labels: Vec<i64> = input.iter().map(|&id| i64::from(id)).collect();
    Batch {
        input_ids: Tensor::from_vec(input, (1, s), &Device::Cpu).unwrap(),
        attention_mask: None,
        labels: Some(Tensor::from_vec(labels, (1, s), &Device::Cpu).unwrap()),
        position_ids: Some(Tensor::from_vec(positions, (1, s), &Device::Cpu).unwrap()),
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn sharded_training_gives_the_replicated_recompute_loss_and_gradients_bit_for_bit() {
    for tied in [true, false] {
        let (replicated, sharded, _) = models(tied);
        for (kind, batch) in [("padded", padded_batch()), ("packed", packed_batch())] {
            let (want_loss, want) = replicated.loss_and_gradients(&batch, true).unwrap();
            let (loss, grads) = sharded.loss_and_gradients(&batch, true).unwrap();
            assert_eq!(loss.to_bits(), want_loss.to_bits(), "tied {tied}, {kind}: loss {loss} vs {want_loss}");
            assert_eq!(grads.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "tied {tied}, {kind}");
            assert_eq!(want.len(), replicated.params().len(), "every parameter has a gradient");
            for (name, g) in &want {
                assert_eq!(grads[name].dims(), g.dims(), "{name}");
                assert!(bits(&grads[name]) == bits(g), "tied {tied}, {kind}: gradient of {name} differs");
            }
        }
    }
}

#[test]
fn training_gathers_each_layer_for_forward_and_for_backward_and_sinks_unit_by_unit() {
    for tied in [true, false] {
        let (_, sharded, shards) = models(tied);
        let config = sharded.config().clone();
        let names = |unit: GatherUnit| unit.param_names(&config);
        let n = config.num_hidden_layers;
        let mut sunk: Vec<Vec<String>> = Vec::new();
        let mut summed = Gradients::new();
        sharded
            .objective_and_gradients_into(&padded_batch(), |nll, count| Ok((nll.sum_all()? / count as f64)?), &mut |grads: Gradients| {
                sunk.push(grads.keys().cloned().collect());
                for (name, g) in grads {
                    let sum = match summed.remove(&name) {
                        Some(previous) => (previous + g)?,
                        None => g,
                    };
                    summed.insert(name, sum);
                }
                Ok(())
            })
            .unwrap();
        let log = shards.take_log();

        // forward: embedding, layers, head; backward: layers in reverse (the embedding's gradient
        // needs no weights)
        let mut want: Vec<GatherUnit> = GatherUnit::in_order(&config);
        want.extend((0..n).rev().map(GatherUnit::Layer));
        assert_eq!(log.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), want.iter().map(|&u| names(u)).collect::<Vec<_>>(), "tied {tied}");
        let unit_bytes = |unit: GatherUnit| -> usize { unit.parameter_shapes(&config).iter().map(|(_, s)| 4 * s.iter().product::<usize>()).sum() };
        let largest = log.iter().map(|&(_, bytes)| bytes).max().unwrap();
        let largest_unit = GatherUnit::in_order(&config).into_iter().map(unit_bytes).max().unwrap();
        assert_eq!(largest, largest_unit, "tied {tied}: one gather is at most one unit");
        assert!(largest < 4 * config.num_parameters() / 2, "tied {tied}: {largest} bytes gathered at once, the model has {}", 4 * config.num_parameters());

        // the sink gets the head's gradients, each layer's from the last, then the embedding's
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let mut want_sunk = vec![sorted(names(GatherUnit::Head))];
        want_sunk.extend((0..n).rev().map(|l| sorted(names(GatherUnit::Layer(l)))));
        want_sunk.push(names(GatherUnit::Embedding));
        assert_eq!(sunk, want_sunk, "tied {tied}");
        let (_, whole) = sharded.loss_and_gradients(&padded_batch(), true).unwrap();
        for (name, g) in &whole {
            assert!(bits(&summed[name]) == bits(g), "tied {tied}: the sunk parts of {name} do not sum to its gradient");
        }
    }
}

#[test]
fn sharded_scoring_equals_replicated_and_gathers_each_unit_once() {
    let (replicated, sharded, shards) = models(false);
    let input = Tensor::from_vec([ids(7, 3), ids(7, 200)].concat(), (2, 7), &Device::Cpu).unwrap();
    let lengths = [7, 4];
    let want = replicated.token_logprobs(&input, &lengths).unwrap();
    assert_eq!(sharded.token_logprobs(&input, &lengths).unwrap(), want);
    let units = GatherUnit::in_order(sharded.config());
    let asked: Vec<Vec<String>> = shards.take_log().into_iter().map(|(names, _)| names).collect();
    assert_eq!(asked, units.iter().map(|u| u.param_names(sharded.config())).collect::<Vec<_>>());
    let mask = Tensor::from_vec(vec![1u32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], (2, 7), &Device::Cpu).unwrap();
    assert_eq!(bits(&sharded.forward(&input, Some(&mask)).unwrap()), bits(&replicated.forward(&input, Some(&mask)).unwrap()));
    let batch = packed_batch();
    let want = replicated.forward_hidden_packed(&batch.input_ids, batch.position_ids.as_ref().unwrap()).unwrap();
    assert_eq!(bits(&sharded.forward_hidden_packed(&batch.input_ids, batch.position_ids.as_ref().unwrap()).unwrap()), bits(&want));
}

#[test]
fn a_sharded_model_refuses_the_plain_backward_and_decoding_by_name() {
    let (_, sharded, shards) = models(true);
    let err = sharded.loss_and_gradients(&padded_batch(), false).unwrap_err().to_string();
    assert!(err.contains("needs recompute = true"), "{err}");
    assert!(shards.take_log().is_empty(), "refused before gathering anything");

    let mut cache = sharded.new_kv_cache(16).unwrap();
    let err = sharded.forward_step(&mut [SequenceStep { cache: &mut cache, tokens: &[1, 2, 3] }]).unwrap_err().to_string();
    assert!(err.contains("sharded (ZeRO-3)") && err.contains("replicated copy"), "{err}");
    assert_eq!(cache.len(), 0, "no cache advanced");
    assert!(shards.take_log().is_empty(), "decoding gathers nothing");
    assert!(sharded.is_sharded() && sharded.params().is_empty() && sharded.trainable().is_empty());
}

#[test]
fn shards_that_disagree_with_the_config_are_named() {
    let (_, _, shards) = models(true);
    let mut smaller = config(true);
    smaller.intermediate_size /= 2;
    let model = Qwen3ForCausalLM::sharded(smaller, shards, DType::F32, &Device::Cpu).unwrap();
    let err = model.loss_and_gradients(&padded_batch(), true).unwrap_err().to_string();
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("[384, 128]"), "{err}");
}

#[test]
fn the_gather_units_cover_every_parameter_once_but_the_tied_embedding() {
    for tied in [true, false] {
        let config = config(tied);
        let mut count: HashMap<String, usize> = HashMap::new();
        for unit in GatherUnit::in_order(&config) {
            for name in unit.param_names(&config) {
                *count.entry(name).or_default() += 1;
            }
        }
        let all: Vec<String> = config.parameter_shapes().into_iter().map(|(name, _)| name).collect();
        assert_eq!(count.len(), all.len(), "tied {tied}");
        for name in &all {
            let want = if tied && name == "model.embed_tokens.weight" { 2 } else { 1 };
            assert_eq!(count[name], want, "tied {tied}: {name}");
        }
    }
}
