"""Cross-check Tansuo's off-policy estimators against obp 0.5.7 on identical inputs.

    python benchmarks/peers/ope_crosscheck.py      # any python: it re-runs itself in the peers venv

Inputs: ``benchmarks/out/ope_obd/inputs.npz``, written by the main-venv benchmark
``benchmarks/bench_ope_obd.py`` (run here with ``--inputs-only`` when missing): for every
campaign the BTS-from-random-log experiment and every one of our policies on the later part
of the random log, with reward, action, position, pscore, ``action_dist``, the cross-fitted
``estimated_rewards`` and the values Tansuo computed in the main venv.

In the peers venv (``benchmarks/peers/.venv``, which cannot import ``tansuo``) this script loads
``src/tansuo/evaluation/ope.py`` by file path (it depends on numpy only), recomputes Tansuo's
values, and feeds the same arrays to obp's ``InverseProbabilityWeighting``,
``SelfNormalizedInverseProbabilityWeighting``, ``DirectMethod``, ``DoublyRobust`` and
``SwitchDoublyRobust(lambda_=τ)`` (``estimate_policy_value`` with ``position``). It fails unless
every |obp − Tansuo| ≤ 1e-9 (for Tansuo's values from both venvs). It also compares Tansuo's
Monte-Carlo BTS ``action_dist`` with obp's ``BernoulliTS(is_zozotown_prior=True, len_list=3)
.compute_batch_action_dist(n_sim=100000)`` (different random streams: they agree to Monte-Carlo
error only; checked at ≤ 0.01 per cell). Writes ``benchmarks/peers/results/ope_crosscheck.json``.

Installed into the peers venv when missing (never into the main venv), constrained to the venv's
``numpy<2`` and ``pandas<2.3``:

- ``obp==0.5.7`` with ``--no-deps --ignore-requires-python`` (it declares Python < 3.11 and pins
  numpy 1.23, pandas 1.5, scikit-learn 1.1, torch 1.12, …; the venv's numpy 1.26, pandas 2.2,
  scikit-learn, scipy, torch 2.13 CPU, PyYAML and tqdm, there for RecBole, serve its imports);
- ``matplotlib==3.8.4`` (with its dependencies contourpy, cycler, fonttools, kiwisolver,
  pyparsing) and ``seaborn==0.11.2`` (``--no-deps``): ``import obp`` imports both at module
  level (``obp/ope/meta.py``); obp pins seaborn < 0.12, and seaborn 0.11 calls
  ``matplotlib.cm.register_cmap``, removed in matplotlib 3.9.

The peers venv itself is built by ``run_peers.ensure_venv`` when missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv"
VPY = VENV / "bin" / "python"
MAIN_PY = ROOT / ".venv" / "bin" / "python"
INPUTS = ROOT / "benchmarks" / "out" / "ope_obd" / "inputs.npz"
INPUTS_META = INPUTS.with_suffix(".json")
RESULT = HERE / "results" / "ope_crosscheck.json"
OPE_PATH = ROOT / "src" / "tansuo" / "evaluation" / "ope.py"
TOLERANCE = 1e-9
BTS_TOLERANCE = 0.01
OBP_N_SIM = 100_000
OBP_PINS = ["obp==0.5.7"]
PLOT_PINS = ["matplotlib==3.8.4"]
NO_DEPS_PINS = ["seaborn==0.11.2"]
CONSTRAINTS = ["numpy<2", "pandas<2.3"]
ESTIMATORS = ("ipw", "snips", "dm", "dr", "switch-dr")

sys.path.insert(0, str(HERE))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- environment

def ensure_obp() -> None:
    """Install obp 0.5.7 and the plotting modules ``import obp`` needs into the peers venv."""
    check = subprocess.run([str(VPY), "-c", "import obp; assert obp.__version__ == '0.5.7'"],
                           capture_output=True, text=True)
    if check.returncode == 0:
        return
    log("installing obp 0.5.7 (+ matplotlib 3.8.4, seaborn 0.11.2) into the peers venv")
    constraints = ROOT / "benchmarks" / "out" / "ope_obd" / "peers-obp-constraints.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text("\n".join(CONSTRAINTS) + "\n")
    pip = [str(VPY), "-m", "pip", "install", "--disable-pip-version-check", "-c",
           str(constraints)]
    subprocess.run(pip + ["--no-deps", "--ignore-requires-python"] + OBP_PINS, check=True)
    subprocess.run(pip + PLOT_PINS, check=True)
    subprocess.run(pip + ["--no-deps"] + NO_DEPS_PINS, check=True)
    subprocess.run([str(VPY), "-c", "import obp"], check=True)


def ensure_inputs(force: bool) -> None:
    if INPUTS.exists() and INPUTS_META.exists() and not force:
        return
    log("writing the estimator inputs with the main venv (bench_ope_obd.py --inputs-only)")
    subprocess.run([str(MAIN_PY), str(ROOT / "benchmarks" / "bench_ope_obd.py"),
                    "--inputs-only"], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- the check

def load_tansuo_ope():
    spec = importlib.util.spec_from_file_location("tansuo_ope_standalone", OPE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def obp_values(inputs: dict, tau: float) -> dict[str, float]:
    import warnings

    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedInverseProbabilityWeighting,
        SwitchDoublyRobust,
    )

    logged = {k: inputs[k] for k in ("reward", "action", "pscore", "position", "action_dist")}
    q = inputs["estimated_rewards"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SNIPS 0/0 when nothing matches
        return {
            "ipw": float(InverseProbabilityWeighting().estimate_policy_value(**logged)),
            "snips": float(
                SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**logged)),
            "dm": float(DirectMethod().estimate_policy_value(
                action_dist=inputs["action_dist"], estimated_rewards_by_reg_model=q,
                position=inputs["position"])),
            "dr": float(DoublyRobust().estimate_policy_value(
                **logged, estimated_rewards_by_reg_model=q)),
            "switch-dr": float(SwitchDoublyRobust(lambda_=tau).estimate_policy_value(
                **logged, estimated_rewards_by_reg_model=q)),
        }


def tansuo_values(ope, inputs: dict, tau: float) -> dict[str, float]:
    logged = {k: inputs[k] for k in ("reward", "action", "pscore", "position", "action_dist")}
    q = inputs["estimated_rewards"]
    try:
        snips = ope.snips(**logged)
    except ValueError:
        snips = math.nan
    return {"ipw": ope.ipw(**logged), "snips": snips,
            "dm": ope.dm(position=inputs["position"], action_dist=inputs["action_dist"],
                         estimated_rewards=q),
            "dr": ope.dr(**logged, estimated_rewards=q),
            "switch-dr": ope.switch_dr(**logged, estimated_rewards=q, tau=tau)}


def inputs_sha256(arrays: dict) -> str:
    """The same hash as ``bench_ope_obd.inputs_sha256`` (checked against inputs.json)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for key in sorted(arrays):
        if key.endswith("__tansuo"):
            continue
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def difference(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b)


def inner() -> None:
    import numpy as np
    import obp
    from obp.policy import BernoulliTS

    ope = load_tansuo_ope()
    meta = json.loads(INPUTS_META.read_text())
    tau = float(meta["switch_tau"])
    with np.load(INPUTS) as npz:
        arrays = {k: npz[k] for k in npz.files}
    digest = inputs_sha256(arrays)
    if digest != meta["inputs_sha256"]:
        raise SystemExit(f"{INPUTS} does not match {INPUTS_META} (hash {digest[:12]}); rerun "
                         "benchmarks/bench_ope_obd.py")
    labels = {"bts": "BTS from the random log (OBP paper experiment)"}
    labels.update({f"own{i}": f"later 30 %: {name}"
                   for i, name in enumerate(meta["own_policies"])})
    prefixes = sorted({k.rsplit("__", 1)[0] for k in arrays})
    results: dict = {}
    worst = 0.0
    for prefix in prefixes:
        campaign, case = prefix.split("__")
        inputs = {k: arrays[f"{prefix}__{k}"] for k in
                  ("reward", "action", "position", "pscore", "action_dist",
                   "estimated_rewards")}
        n = inputs["reward"].shape[0]
        if inputs["action_dist"].ndim == 2:  # context-free: the same for every round
            inputs["action_dist"] = np.ascontiguousarray(
                np.broadcast_to(inputs["action_dist"][None], (n, *inputs["action_dist"].shape)))
        ours = tansuo_values(ope, inputs, tau)
        main = dict(zip(ESTIMATORS, arrays[f"{prefix}__tansuo"].tolist(), strict=True))
        theirs = obp_values(inputs, tau)
        rows = {}
        for name in ESTIMATORS:
            diff = max(difference(theirs[name], ours[name]), difference(theirs[name], main[name]))
            worst = max(worst, diff)
            rows[name] = {"obp": theirs[name], "tansuo": ours[name],
                          "tansuo_main_venv": main[name], "abs_difference": diff}
        results.setdefault(campaign, {})[labels[case]] = rows
        log(f"{prefix}: max |obp − tansuo| = {max(r['abs_difference'] for r in rows.values()):.2e}")
    per_estimator = {
        campaign: {name: max(rows[name]["abs_difference"] for rows in cases.values())
                   for name in ESTIMATORS}
        for campaign, cases in results.items()}

    bts_check = {}
    for campaign in meta["campaigns"]:
        ours_dist = arrays[f"{campaign}__bts__action_dist"]
        policy = BernoulliTS(n_actions=ours_dist.shape[0], len_list=ours_dist.shape[1],
                             is_zozotown_prior=True, campaign=campaign, random_state=12345)
        theirs_dist = policy.compute_batch_action_dist(n_rounds=1, n_sim=OBP_N_SIM)[0]
        gap = float(np.abs(theirs_dist - ours_dist).max())
        bts_check[campaign] = {"max_abs_difference": gap, "obp_n_sim": OBP_N_SIM,
                               "tansuo_draws": meta["draws"]}
        log(f"{campaign}: BTS action_dist, max |obp MC − tansuo MC| = {gap:.4f}")

    out = {
        "what": "Tansuo's OPE estimators vs obp 0.5.7 on identical inputs "
                "(benchmarks/out/ope_obd/inputs.npz from benchmarks/bench_ope_obd.py)",
        "obp_version": obp.__version__,
        "inputs_sha256": digest,
        "switch_tau": tau,
        "tolerance": TOLERANCE,
        "max_abs_difference": worst,
        "max_abs_difference_per_campaign_per_estimator": per_estimator,
        "results": results,
        "bts_action_dist_vs_obp": {"tolerance": BTS_TOLERANCE, "campaigns": bts_check},
        "peers_venv_installs": {"no_deps": OBP_PINS + NO_DEPS_PINS, "with_deps": PLOT_PINS,
                                "constraints": CONSTRAINTS},
        "versions": versions(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    log(f"wrote {RESULT.relative_to(ROOT)}; max |obp − tansuo| = {worst:.2e}")
    if worst > TOLERANCE:
        raise SystemExit(f"obp and Tansuo disagree by {worst:.2e} > {TOLERANCE:g}")
    bad = {c: v["max_abs_difference"] for c, v in bts_check.items()
           if v["max_abs_difference"] > BTS_TOLERANCE}
    if bad:
        raise SystemExit(f"BTS action_dist differs from obp's beyond Monte-Carlo error: {bad}")


def versions() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in ("obp", "numpy", "scipy", "pandas", "scikit-learn", "matplotlib", "seaborn"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    return v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh-inputs", action="store_true",
                        help="rewrite the inputs with the main venv first")
    args = parser.parse_args()
    if Path(sys.prefix).resolve() == VENV.resolve():
        inner()
        return
    from run_peers import ensure_venv

    ensure_venv()
    ensure_obp()
    ensure_inputs(args.refresh_inputs)
    sys.exit(subprocess.run([str(VPY), str(Path(__file__).resolve())], cwd=ROOT).returncode)


if __name__ == "__main__":
    main()
