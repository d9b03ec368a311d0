"""Triton kernels for FusedAdam (imported only when a Triton step runs; see triton_adam)."""

import triton
import triton.language as tl


@triton.jit
def to_storage(x, DTYPE: tl.constexpr):
    """Round to DTYPE to nearest even. bf16 is rounded by hand: the hardware conversion does
    this too, but Triton's interpreter truncates, and the kernel must agree with itself."""
    if tl.bfloat16 == DTYPE:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE)


@triton.jit
def hash32(x):
    """adam_cpu.c's hash32 ("lowbias32") on uint32 lanes."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def to_bf16_stochastic(x, index, salt):
    """float32 to bf16, rounded stochastically as adam_cpu.c's bf16_store_sr (NaN stays NaN)."""
    random = hash32(index.to(tl.uint32) + salt) & 0xFFFF
    bits = x.to(tl.uint32, bitcast=True)
    rounded = ((bits + random) & 0xFFFF0000).to(tl.float32, bitcast=True)
    return tl.where(x != x, x, rounded).to(tl.bfloat16)


@triton.jit
def adam_kernel(
    p_tab,
    g_tab,
    m_tab,
    v_tab,
    vmax_tab,
    numel_tab,
    row_size_tab,
    coef_index_tab,
    salt_tab,
    block_tensor,
    block_start,
    coef,
    AMSGRAD: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    PER_ROW: tl.constexpr,
    DTYPE: tl.constexpr,
    STATE_DTYPE: tl.constexpr,
    STOCHASTIC: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    t = tl.load(block_tensor + b)
    offs = tl.load(block_start + b) + tl.arange(0, BLOCK)
    mask = offs < tl.load(numel_tab + t)
    row = offs * 0  # uniform mode: every lane reads the same (broadcast) coefficient row
    if PER_ROW:
        row = offs // tl.load(row_size_tab + t)
    k = coef + (tl.load(coef_index_tab + t) + row) * 7
    step_size = tl.load(k + 0, mask=mask, other=1.0).to(COMPUTE)
    bc2_sqrt = tl.load(k + 1, mask=mask, other=1.0).to(COMPUTE)
    beta1_64 = tl.load(k + 2, mask=mask, other=0.5)
    beta2_64 = tl.load(k + 3, mask=mask, other=0.5)
    eps = tl.load(k + 4, mask=mask, other=1.0).to(COMPUTE)
    l2 = tl.load(k + 5, mask=mask, other=0.0).to(COMPUTE)
    decay = tl.load(k + 6, mask=mask, other=1.0).to(COMPUTE)
    beta1, beta2 = beta1_64.to(COMPUTE), beta2_64.to(COMPUTE)
    w1, w2 = (1.0 - beta1_64).to(COMPUTE), (1.0 - beta2_64).to(COMPUTE)

    p_ptr = tl.load(p_tab + t).to(tl.pointer_type(DTYPE))
    g_ptr = tl.load(g_tab + t).to(tl.pointer_type(DTYPE))
    m_ptr = tl.load(m_tab + t).to(tl.pointer_type(STATE_DTYPE))
    v_ptr = tl.load(v_tab + t).to(tl.pointer_type(STATE_DTYPE))
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    if MAXIMIZE:
        g = -g
    g = g + l2 * p
    p = p * decay
    m = tl.where(beta1 > 0.5, m + w1 * (g - m), g - (g - m) * beta1)
    v = beta2 * v + w2 * (g * g)
    second = v
    if AMSGRAD:
        vmax_ptr = tl.load(vmax_tab + t).to(tl.pointer_type(STATE_DTYPE))
        second = tl.maximum(tl.load(vmax_ptr + offs, mask=mask, other=0.0).to(COMPUTE), v)
        tl.store(vmax_ptr + offs, to_storage(second, STATE_DTYPE), mask=mask)
    denom = tl.sqrt(second) / bc2_sqrt + eps
    p = p - step_size * (m / denom)
    if STOCHASTIC:
        salt = tl.load(salt_tab + t).to(tl.uint32)
        tl.store(p_ptr + offs, to_bf16_stochastic(p, offs, salt), mask=mask)
    else:
        tl.store(p_ptr + offs, to_storage(p, DTYPE), mask=mask)
    tl.store(m_ptr + offs, to_storage(m, STATE_DTYPE), mask=mask)
    tl.store(v_ptr + offs, to_storage(v, STATE_DTYPE), mask=mask)
