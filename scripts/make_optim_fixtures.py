#!/usr/bin/env python3
"""PyTorch-reference fixtures for forge-train's AdamW, gradient clipping and LR schedules.

Run with the project venv (scripts/setup-python.sh):  .venv/bin/python scripts/make_optim_fixtures.py
Deterministic in content (tensors and metadata); the safetensors writer orders the metadata keys
of the header differently on each run, so the bytes differ: compare contents, not checksums.
Writes (a few KiB each) into fixtures/optim/:

  adamw_<case>.safetensors   torch.optim.AdamW (foreach=False) on a few small f32 tensors named like
                             Qwen3 parameters, two param groups (the 1-D norm weight with
                             weight_decay 0), fixed per-step gradients, torch.nn.utils.clip_grad_norm_
                             when the case clips, and a transformers LR schedule stepped after each
                             optimizer step. Tensors (f32 unless noted):
      init.<name>                parameters before the first step
      grad.<s>.<name>            gradient fed at step s (before clipping)
      param.<s>.<name>           parameters after step s
      exp_avg.<name>, exp_avg_sq.<name>   optimizer state after the last step
      lr                         f64 [steps]: the lr each step used (param_groups[0]["lr"])
      grad_norm                  f32 [steps]: total L2 norm before clipping
    metadata: lr, beta1, beta2, eps, weight_decay, max_grad_norm ("none" = no clipping), schedule,
    warmup_steps, total_steps, steps, no_decay (comma-separated names), bf16_exact ("true" when
    init and grads are exactly representable in bf16: the master-weight case)
  schedules.safetensors      f64 [16] per schedule: base_lr * lr_lambda(step) for steps 0..15 of
                             get_constant_schedule_with_warmup(3), get_linear_schedule_with_warmup(3, 12),
                             get_cosine_schedule_with_warmup(3, 12), get_cosine_schedule_with_warmup(0, 10),
                             get_cosine_with_min_lr_schedule_with_warmup(3, 12, min_lr_rate=0.1)
                             (metadata: base_lr and each schedule's arguments)
"""
import os
import warnings

import torch
from safetensors.torch import save_file
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "fixtures", "optim")

# Shapes named like Qwen3 parameters; the norm weight is the 1-D no-decay parameter.
PARAMS = [
    ("model.embed_tokens.weight", (8, 4)),
    ("model.layers.0.mlp.up_proj.weight", (6, 4)),
    ("model.layers.0.input_layernorm.weight", (4,)),
    ("lm_head.weight", (8, 4)),
]
NO_DECAY = {"model.layers.0.input_layernorm.weight"}

# Gradient scale per step: alternately above and below max_grad_norm = 1 (the raw norm is ~8).
GRAD_SCALES = [0.4, 0.05, 0.3, 0.02, 0.25, 0.1]

CASES = {
    # SFT-like: warmup + cosine, clipping, betas (0.9, 0.95), strong decay so it is visible.
    "cosine_clip": dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0,
                        schedule="cosine", warmup=2, total=6, steps=5, bf16=False),
    # torch defaults, linear decay, no clipping.
    "linear_noclip": dict(lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, max_grad_norm=None,
                          schedule="linear", warmup=1, total=5, steps=5, bf16=False),
    # Values exactly representable in bf16: the f32 run is what bf16 master weights must track.
    "bf16_master": dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0,
                        schedule="cosine", warmup=1, total=6, steps=6, bf16=True),
}


def schedule_for(opt, kind, warmup, total):
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(opt, warmup, total)
    if kind == "linear":
        return get_linear_schedule_with_warmup(opt, warmup, total)
    raise ValueError(kind)


def run_case(name, c, seed):
    gen = torch.Generator().manual_seed(seed)
    round_to = (lambda t: t.to(torch.bfloat16).to(torch.float32)) if c["bf16"] else (lambda t: t)
    tensors, params = {}, []
    for pname, shape in PARAMS:
        if pname in NO_DECAY:
            init = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            init = 0.5 * torch.randn(shape, generator=gen)
        init = round_to(init)
        tensors[f"init.{pname}"] = init.clone()
        params.append(torch.nn.Parameter(init.clone()))
    grads = []
    for s in range(c["steps"]):
        step_grads = [round_to(GRAD_SCALES[s] * torch.randn(p.shape, generator=gen)) for p in params]
        grads.append(step_grads)
        for (pname, _), g in zip(PARAMS, step_grads):
            tensors[f"grad.{s}.{pname}"] = g.clone()

    decay = [p for (n, _), p in zip(PARAMS, params) if n not in NO_DECAY]
    no_decay = [p for (n, _), p in zip(PARAMS, params) if n in NO_DECAY]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": c["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=c["lr"], betas=c["betas"], eps=c["eps"], foreach=False,
    )
    sched = schedule_for(opt, c["schedule"], c["warmup"], c["total"])
    lrs, norms = [], []
    for s in range(c["steps"]):
        for p, g in zip(params, grads[s]):
            p.grad = g.clone()
        lrs.append(opt.param_groups[0]["lr"])
        if c["max_grad_norm"] is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, c["max_grad_norm"])
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        norms.append(float(norm))
        opt.step()
        sched.step()
        for (pname, _), p in zip(PARAMS, params):
            tensors[f"param.{s}.{pname}"] = p.detach().clone()
    for (pname, _), p in zip(PARAMS, params):
        state = opt.state[p]
        tensors[f"exp_avg.{pname}"] = state["exp_avg"].clone()
        tensors[f"exp_avg_sq.{pname}"] = state["exp_avg_sq"].clone()
    tensors["lr"] = torch.tensor(lrs, dtype=torch.float64)
    tensors["grad_norm"] = torch.tensor(norms, dtype=torch.float32)
    metadata = {
        "lr": repr(c["lr"]), "beta1": repr(c["betas"][0]), "beta2": repr(c["betas"][1]), "eps": repr(c["eps"]),
        "weight_decay": repr(c["weight_decay"]),
        "max_grad_norm": "none" if c["max_grad_norm"] is None else repr(c["max_grad_norm"]),
        "schedule": c["schedule"], "warmup_steps": str(c["warmup"]), "total_steps": str(c["total"]),
        "steps": str(c["steps"]), "no_decay": ",".join(sorted(NO_DECAY)), "bf16_exact": str(c["bf16"]).lower(),
        "torch": torch.__version__,
    }
    path = os.path.join(OUT, f"adamw_{name}.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    print(f"wrote {os.path.relpath(path, REPO)} ({len(tensors)} tensors, grad norms {[round(n, 3) for n in norms]})")


def schedules():
    base_lr = 3e-4
    dummy = torch.nn.Parameter(torch.zeros(1))
    makers = {
        "constant_warmup": lambda o: get_constant_schedule_with_warmup(o, 3),
        "linear": lambda o: get_linear_schedule_with_warmup(o, 3, 12),
        "cosine": lambda o: get_cosine_schedule_with_warmup(o, 3, 12),
        "cosine_nowarmup": lambda o: get_cosine_schedule_with_warmup(o, 0, 10),
        "cosine_min_lr": lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, 3, 12, min_lr_rate=0.1),
    }
    tensors = {}
    for name, make in makers.items():
        opt = torch.optim.AdamW([dummy], lr=base_lr)
        sched = make(opt)
        # LambdaLR: lr = base_lr * lambda(step), in Python floats (f64).
        tensors[name] = torch.tensor([base_lr * sched.lr_lambdas[0](s) for s in range(16)], dtype=torch.float64)
    metadata = {
        "base_lr": repr(base_lr),
        "constant_warmup": "warmup=3", "linear": "warmup=3,total=12", "cosine": "warmup=3,total=12",
        "cosine_nowarmup": "warmup=0,total=10", "cosine_min_lr": "warmup=3,total=12,min_lr_rate=0.1",
    }
    path = os.path.join(OUT, "schedules.safetensors")
    save_file(tensors, path, metadata=metadata)
    print(f"wrote {os.path.relpath(path, REPO)}")


def main():
    warnings.filterwarnings("ignore")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for i, (name, case) in enumerate(CASES.items()):
        run_case(name, case, seed=1000 + i)
    schedules()


if __name__ == "__main__":
    main()
