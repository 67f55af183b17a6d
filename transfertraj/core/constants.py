"""Facts that several layers share, each stated once.

Jobs, model, serving and DAGs import these rather than repeating a number: a change here is a change
everywhere, and a grep for the name finds every user.
"""

from __future__ import annotations

# A city's name is part of table partitions, DAG ids, registry names (`transfertraj-<city>`) and file
# names, so it is kept to what all four accept.
CITY_NAME_PATTERN = r"^[a-z][a-z0-9_]{1,39}$"

# phi: the radius (metres) within which POIs are counted and road length measured around each point
# (PAPER.md, "POI and road densities"). The paper's value; a city config may set its own `phi_m`, and a
# checkpoint records the phi its features were built with.
PHI_DEFAULT_M = 100.0

# The paper keeps trajectories of 5..120 points; longer ones are cut into windows by the cleaning and
# left out of training and scoring.
MAX_POINTS = 120

# Trajectory prediction hides (predicts) the last 5 points of a trajectory.
TP_FUTURE = 5

# Named model sizes, as ModelArgs overrides: "paper" is the paper's (the ModelArgs defaults, d=128, L=2,
# C=8, k=4); "small" is the committed base model's (weights/base/README.md: the paper's two layers at half
# the width, what 2 CPU cores train on both cities within the hour); "tiny" is the CPU size the
# evaluation's documented quick-suite figures (docs/evaluation.md) and the first demo were produced with. Training settings (batch size, epochs) are not sizes: callers keep them.
# The DAGs' params, the demo, the evaluation and the model all read this one table; it lives here (pure
# data) so that a DAG file can offer the sizes without importing torch.
MODEL_SIZES: dict[str, dict] = {
    "paper": {},
    "small": {
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 2,
        "n_experts": 4,
        "top_k": 2,
        "expert_hidden": 128,
        "ffn_hidden": 256,
        "mixer_heads": 2,
        "fourier_freqs": 8,
    },
    "tiny": {
        "d_model": 32,
        "n_layers": 1,
        "n_heads": 2,
        "n_experts": 4,
        "top_k": 2,
        "expert_hidden": 64,
        "ffn_hidden": 128,
        "mixer_heads": 2,
        "fourier_freqs": 8,
    },
}

# Unix epoch numbers by magnitude: GPS logs of 1990..2100 are 6.3e8..4.1e9 seconds, so a number above
# 1e11 is milliseconds (1e11 s would be the year 5138), above 1e14 microseconds, above 1e17 nanoseconds.
# (threshold, units per second), largest first; the parser (jobs/parse_points.py) and the landing's
# dating (jobs/land_sample.py) both read this table.
EPOCH_UNITS: tuple[tuple[float, float], ...] = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))
