"""The layout of the per-operator scalar vector that datasets store (one row per operator)."""

SCALARS: tuple[str, ...] = (
    "out_0", "out_1", "out_2", "out_3", "in_0", "in_1", "in_2", "in_3", "kernel_h", "kernel_w",
    "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w", "group", "axis",
    "n_inputs", "log_flops", "log_params", "log_memory",
)
