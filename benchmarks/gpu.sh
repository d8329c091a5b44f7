#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with an NVIDIA GPU and a CUDA build of torch
# (run from the repository root in an environment where `pip install -e .` was done):
#   1. the Poisson-size HIG step on CUDA (the paper: 13.8 s per update on its GPU; aim: <= 0.3 s),
#   2. one SIP step of the heat experiment on CUDA, next to an Adam step,
#   3. the runner under torchrun with NCCL, one process.
# Results: benchmarks/results/hig_step_gpu.md, benchmarks/results/sip_heat_gpu.md, benchmarks/results/torchrun_gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python -m phi_hig bench --device cuda --cases poisson41k poisson25k oscillators qdipole --skip authors svd gram-dense \
    --output "$out/hig_step_gpu.md"
python - <<'PY' | tee "$out/sip_heat_gpu.md"
import statistics, time, torch
from phi_hig import experiments, sip_step
from phi_hig.experiments import DataStream
ex = experiments.get('heat')                                   # 64 x 64, the paper's size
torch.manual_seed(0)
net = ex.make_net().cuda()
x, t = (v.cuda() for v in DataStream(ex, 0).next(128))
inv = ex.inverses['default']
opt = torch.optim.Adam(net.parameters(), lr=0.0)
physics = (ex.simulate, inv)
def sip():
    sip_step(net, opt, x, t, physics, loss=ex.loss)
def adam():
    opt.zero_grad(); ex.loss(ex.simulate(net(x)), t).mean().backward(); opt.step()
times = {'sip': [], 'adam': []}
for _ in range(12):
    for name, f in (('sip', sip), ('adam', adam)):
        torch.cuda.synchronize(); t0 = time.perf_counter(); f(); torch.cuda.synchronize()
        times[name].append(time.perf_counter() - t0)
print(f"# SIP heat step on {torch.cuda.get_device_name(0)}\n")
print("| step | median (10 after 2 warm-up) |\n|---|---|")
for name, v in times.items():
    print(f"| {name} (64², batch 128) | {statistics.median(v[2:]) * 1e3:.1f} ms |")
PY
{ echo "# torchrun with NCCL, one process"; echo; echo '```'
  python -m torch.distributed.run --nproc_per_node=1 -m phi_hig run toy --preset test --device cuda --steps 20 \
      --out runs/torchrun_gpu 2>&1 | tail -8
  echo '```'; } | tee "$out/torchrun_gpu.md"
