"""Golden data for tests/optim/test_golden.c: what torch.optim does to one
set of parameters over several steps, and the learning rates that
torch.optim.lr_scheduler gives step after step. Run by CTest before the
test:

    /usr/bin/python3 tests/golden/make_optim_golden.py OUT_DIR

writes OUT_DIR/<case>.safetensors for each optimizer case, holding
"w0" (the parameters before the first step), "grads" (steps x n: the
gradient handed to each step), "lrs" (the learning rate of each step),
"weights" (steps x n: the parameters after each step) and "m", "v" (the
state after the last step: SGD's momentum buffer, Adam's two moments),
with the settings in the metadata; and OUT_DIR/schedules.safetensors
with "<case>" (the learning rate at steps 0, 1, ...) and the schedule's
settings in the metadata as "<case>.<key>".

Everything is float32, as osprey computes it; the gradients change from
step to step and so does the learning rate, so that the momentum and the
moments carry real history."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from torchspec import save_safetensors  # noqa: E402

N = 1000
STEPS = 12

# name: (torch class, osprey kind, settings)
OPTIMIZERS = {
    "sgd": ("sgd", {"momentum": 0.0, "nesterov": 0, "weight_decay": 0.0}),
    "sgd_weight_decay": ("sgd", {"momentum": 0.0, "nesterov": 0, "weight_decay": 0.01}),
    "sgd_momentum": ("sgd", {"momentum": 0.9, "nesterov": 0, "weight_decay": 0.0}),
    "sgd_momentum_weight_decay": ("sgd", {"momentum": 0.9, "nesterov": 0, "weight_decay": 5e-4}),
    "sgd_nesterov": ("sgd", {"momentum": 0.9, "nesterov": 1, "weight_decay": 0.0}),
    "sgd_nesterov_weight_decay": ("sgd", {"momentum": 0.8, "nesterov": 1, "weight_decay": 1e-3}),
    "adam": ("adam", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}),
    "adam_weight_decay": ("adam", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}),
    "adam_betas": ("adam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.0}),
    "adamw": ("adamw", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}),
    "adamw_strong_decay": ("adamw", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.5}),
}


def make_optimizer(kind, s, params, lr):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=s["momentum"], nesterov=bool(s["nesterov"]),
                               weight_decay=s["weight_decay"])
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(s["beta1"], s["beta2"]), eps=s["eps"],
               weight_decay=s["weight_decay"])


def optimizer_case(name, kind, s, seed, out_dir):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(N, generator=g)
    # Gradients of mixed scales: Adam's moments see both tiny and large ones.
    scale = torch.exp(torch.randn(N, generator=g))
    grads = torch.randn(STEPS, N, generator=g) * scale
    base = 0.01 if kind != "sgd" else 0.1
    lrs = torch.tensor([base * (1.0 - 0.05 * k) for k in range(STEPS)], dtype=torch.float32)
    p = torch.nn.Parameter(w0.clone())
    opt = make_optimizer(kind, s, [p], float(lrs[0]))
    weights = torch.empty(STEPS, N)
    for k in range(STEPS):
        # The rate osprey is handed: a float32 value.
        opt.param_groups[0]["lr"] = float(lrs[k])
        p.grad = grads[k].clone()
        opt.step()
        weights[k] = p.detach()
    state = opt.state[p]
    if kind == "sgd":
        m = state.get("momentum_buffer")
        m = torch.zeros(N) if m is None else m
        v = torch.zeros(N)
    else:
        m, v = state["exp_avg"], state["exp_avg_sq"]
    meta = {"kind": kind, "steps": str(STEPS)}
    meta.update({k: repr(float(x)) for k, x in s.items()})
    save_safetensors(os.path.join(out_dir, f"{name}.safetensors"),
                     {"w0": w0, "grads": grads, "lrs": lrs, "weights": weights, "m": m, "v": v}, meta)


BASE_LR = 0.1

# name: (osprey settings, steps recorded, a function making torch's scheduler)
def linear_warmup(opt, warmup):
    # Factor (k + 1) / warmup at step k < warmup, then 1.
    return torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0,
                                             total_iters=warmup - 1)


def after_warmup(opt, warmup, then):
    return torch.optim.lr_scheduler.SequentialLR(opt, [linear_warmup(opt, warmup), then],
                                                 milestones=[warmup])


SCHEDULES = {
    "step": ({"kind": "step", "warmup": 0, "total": 0, "step_size": 3, "gamma": 0.5, "min_factor": 0},
             20, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "step_gamma": ({"kind": "step", "warmup": 0, "total": 0, "step_size": 7, "gamma": 0.1, "min_factor": 0},
                   30, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.1)),
    "cosine": ({"kind": "cosine", "warmup": 0, "total": 40, "step_size": 0, "gamma": 0, "min_factor": 0},
               41, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=40)),
    "cosine_min": ({"kind": "cosine", "warmup": 0, "total": 25, "step_size": 0, "gamma": 0, "min_factor": 0.1},
                   26, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=0.1 * BASE_LR)),
    "warmup_constant": ({"kind": "constant", "warmup": 5, "total": 0, "step_size": 0, "gamma": 0, "min_factor": 0},
                        12, lambda o: linear_warmup(o, 5)),
    "warmup_step": ({"kind": "step", "warmup": 4, "total": 0, "step_size": 5, "gamma": 0.5, "min_factor": 0},
                    25, lambda o: after_warmup(o, 4, torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5))),
    "warmup_cosine": ({"kind": "cosine", "warmup": 6, "total": 36, "step_size": 0, "gamma": 0, "min_factor": 0.05},
                      37, lambda o: after_warmup(o, 6, torch.optim.lr_scheduler.CosineAnnealingLR(
                          o, T_max=30, eta_min=0.05 * BASE_LR))),
}


def schedules(out_dir):
    tensors, meta = {}, {"base_lr": repr(BASE_LR)}
    for name, (s, steps, make) in SCHEDULES.items():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
        sched = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        tensors[name] = torch.tensor(lrs, dtype=torch.float32)
        for k, x in s.items():
            meta[f"{name}.{k}"] = str(x)
    save_safetensors(os.path.join(out_dir, "schedules.safetensors"), tensors, meta)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    for i, (name, (kind, s)) in enumerate(OPTIMIZERS.items()):
        optimizer_case(name, kind, s, 100 + i, out_dir)
    schedules(out_dir)


if __name__ == "__main__":
    import warnings

    # SequentialLR hands its schedulers an epoch, which torch warns about.
    warnings.filterwarnings("ignore", category=UserWarning)
    main()
