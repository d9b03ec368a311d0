"""The built-in task names with one-line descriptions. No torch here: listing the tasks and
checking a ``--task`` name take milliseconds. The factories are in builtin.py, by the same
names."""

DESCRIPTIONS = {
    "digits-mlp": "8x8 handwritten digits (scikit-learn), MLP; val_accuracy (saturates near 0.98)",
    "wine-mlp": "wine cultivars (scikit-learn), MLP; val_accuracy",
    "breast-cancer-mlp": "breast cancer diagnosis (scikit-learn), MLP; val_accuracy",
    "diabetes-mlp": "diabetes progression regression (scikit-learn), MLP; val_mse (minimize)",
    "mnist1d-mlp": "MNIST-1D generated offline, MLP; val_accuracy (default)",
    "mnist1d-cnn": "MNIST-1D generated offline, 1-D CNN; val_accuracy",
    "charlm-transformer": "generated English-like text, 2-layer causal char transformer; "
    "val_loss (minimize), perplexity reported",
}
