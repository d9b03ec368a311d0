"""The Triton kernel compiled by Triton's real compiler for real GPU targets, without a GPU.

The rest of tests/optim runs the kernel in Triton's interpreter, which checks its logic but
not whether the compiler accepts it: a construct the interpreter runs and the compiler
rejects (a dtype mix, a pointer cast) would first fail on a user's GPU. Here every shipped
variant is compiled ahead of time to a cubin for Ampere (sm_80) and Hopper (sm_90), which
needs Triton's bundled ptxas and no driver. It runs in a child process: the suite switches on
TRITON_INTERPRET, under which @triton.jit makes interpreted functions that cannot compile.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

# (name, DTYPE, STATE_DTYPE, AMSGRAD, MAXIMIZE, PER_ROW, STOCHASTIC): every dtype pairing that
# triton_adam._triton_dtypes ships, and each switch on at least once.
VARIANTS = [
    ("fp32", "float32", "float32", False, False, False, False),
    ("fp32-amsgrad-maximize", "float32", "float32", True, True, False, False),
    ("fp32-per-row", "float32", "float32", False, False, True, False),
    ("fp64", "float64", "float64", False, False, False, False),
    ("bf16-fp32-state", "bfloat16", "float32", False, False, False, False),
    ("bf16-stochastic", "bfloat16", "float32", False, False, False, True),
    ("bf16-all-switches", "bfloat16", "float32", True, True, True, True),
    ("fp16-fp32-state", "float16", "float32", False, False, False, False),
]
COMPUTE = {"float32": "float32", "float64": "float64", "bfloat16": "float32", "float16": "float32"}
TARGETS = [80, 90]

COMPILE = """
import json, sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from adamtune.optim._triton_kernels import adam_kernel
from adamtune.optim.triton_adam import BLOCK

TABLES = ["p_tab", "g_tab", "m_tab", "v_tab", "vmax_tab", "numel_tab", "row_size_tab",
          "coef_index_tab", "salt_tab", "block_tensor", "block_start"]
out = {}
for name, dtype, state, amsgrad, maximize, per_row, stochastic, compute, capability in json.loads(sys.argv[1]):
    constants = dict(AMSGRAD=amsgrad, MAXIMIZE=maximize, PER_ROW=per_row,
                     DTYPE=getattr(tl, dtype), STATE_DTYPE=getattr(tl, state),
                     STOCHASTIC=stochastic, COMPUTE=getattr(tl, compute), BLOCK=BLOCK)
    signature = {**{t: "*i64" for t in TABLES}, "coef": "*fp64", **{k: "constexpr" for k in constants}}
    source = ASTSource(fn=adam_kernel, signature=signature, constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32))
    cubin = compiled.asm["cubin"]
    out[f"{name}@sm_{capability}"] = {
        "elf": cubin[:4] == b"\\x7fELF",
        "size": len(cubin),
        "target": f".target sm_{capability}" in compiled.asm["ptx"],
    }
print(json.dumps(out))
"""


@pytest.mark.slow
def test_every_kernel_variant_compiles_to_a_cubin_for_ampere_and_hopper():
    jobs = [[*v, COMPUTE[v[1]], capability] for v in VARIANTS for capability in TARGETS]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, said out loud
    done = subprocess.run(
        [sys.executable, "-c", COMPILE, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(f"{v[0]}@sm_{c}" for v in VARIANTS for c in TARGETS)
    for name, result in results.items():
        assert result["elf"] and result["size"] > 1000 and result["target"], (name, result)
