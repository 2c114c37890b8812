"""Every "mean ± std" that notebook 10 and the README's row for it quote comes from a recorded run.

The prose of notebook 10 states its numbers in Markdown, where nothing recomputes them. This test
does: it groups the recorded runs (`benchmarks/results/*.json`) into cells (everything equal but
the seed), computes mean ± standard deviation over seeds for every score the runs carry, and
checks that each "a ± b" in the text is one of them. A number typed from memory, or left behind
when new runs changed a cell, fails here.

The same for notebook 05's cost section: its ratios, times and memory figures are recomputed from
the per-round times and byte counts in benchmarks/results/course-05-cost.json.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from pathlib import Path

from sagan_edu.halves import chance_agreement, cohens_kappa

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOTEBOOK = ROOT / "notebooks" / "10_does_attention_help.ipynb"

# "0.537 ± 0.02", "-0.01 ± 0.019", "82.9 ± 13"; a full stop after the spread is prose.
PLUS_MINUS = re.compile(r"(-?\d[\d,]*(?:\.\d+)?) ± (\d+(?:\.\d+)?)")


def mean_std(values: list[float]) -> str | None:
    """As the notebook and benchmarks/ablation.py write it: 3 significant digits ± 2."""
    if len(values) < 2:
        return None
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def cell_key(run: dict) -> tuple:
    c = run["config"]
    return (run["dataset"], run["placement"], run["steps"], c["g_channels"],
            c.get("d_channels", c["g_channels"]), c["batch_size"], c["img_size"],
            c.get("attention_in", "both"), c.get("attention_block", "attention"),
            c.get("attention_scaled", False), c.get("lr_d"), c.get("lr_g"),
            run["device"].split(":")[0])  # fmt: skip


def cells(runs: list[dict]) -> Iterable[list[dict]]:
    """Each cell's runs, and each cell's runs of one status (say, only the collapsed ones)."""
    grouped: dict[tuple, list[dict]] = {}
    for run in runs:
        grouped.setdefault(cell_key(run), []).append(run)
        grouped.setdefault((*cell_key(run), run.get("status")), []).append(run)
    return grouped.values()


def recorded_values() -> set[str]:
    """Every mean ± std over seeds that the recorded runs support."""
    runs = []
    for name in ("ablation.json", "tuning.json", "ablation-cpu-long-2026-11-22.json"):
        runs += json.loads((RESULTS / name).read_text(encoding="utf-8"))["runs"]
    found = set()
    for group in cells(runs):
        scored = [r for r in group if r.get("metrics")]
        for metric in {m for r in scored for m in r["metrics"]}:
            found.add(mean_std([r["metrics"][m] for r in scored for m in [metric]
                                if m in r["metrics"]]))  # fmt: skip
            # The causal test: the change when G's attention is switched off.
            switched = [r for r in scored if "attention_off" in r]
            for off in {k for r in switched for k in r["attention_off"]}:
                found.add(mean_std([r["attention_off"][off][metric] - r["metrics"][metric]
                                    for r in switched if off in r["attention_off"]]))  # fmt: skip
        # Shape and colour agreement against each model's own chance level (sagan_edu.halves),
        # from the per-sample classes of both halves.
        labelled = [r["per_sample"] for r in scored if "shape_left" in r.get("per_sample", {})]
        for kind in ("shape", "colour"):
            for score in (chance_agreement, cohens_kappa):
                found.add(mean_std([score(p[f"{kind}_left"], p[f"{kind}_right"])
                                    for p in labelled]))  # fmt: skip
    # D's overfitting gap at each measured step, per placement and run length.
    overfit = json.loads((RESULTS / "overfitting.json").read_text(encoding="utf-8"))["runs"]
    by_setting: dict[tuple, list[dict]] = {}
    for run in overfit:
        by_setting.setdefault((run["placement"], run["steps"]), []).append(run)
    for group in by_setting.values():
        for i in range(len(group[0]["curve"]["step"])):
            found.add(mean_std([r["curve"]["gap"][i] for r in group]))
    found.discard(None)
    return found


def quoted_pairs(text: str) -> list[str]:
    return [f"{mean} ± {spread}" for mean, spread in PLUS_MINUS.findall(text)]


def notebook_prose() -> str:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    prose = [c["source"] for c in notebook["cells"] if c["cell_type"] == "markdown"]
    return "\n".join("".join(lines) for lines in prose)


def readme_row() -> str:
    rows = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| `10_does_attention_help`")]  # fmt: skip
    assert len(rows) == 1, "the README's course table has one row for notebook 10"
    return rows[0]


def test_the_check_finds_numbers_and_rejects_a_wrong_one():
    recorded = recorded_values()
    assert "0.537 ± 0.02" in recorded  # the long setting, 16×16 attention, seeds 1-3
    assert quoted_pairs("x 0.537 ± 0.02. y -0.01 ± 0.019") == ["0.537 ± 0.02", "-0.01 ± 0.019"]
    assert "0.538 ± 0.02" not in recorded
    # cell m, 16×16 attention: its own chance level and kappa for shape, seeds 1-3
    assert "0.377 ± 0.031" in recorded and "0.128 ± 0.15" in recorded


def test_notebook_10_quotes_only_recorded_numbers():
    quoted = quoted_pairs(notebook_prose())
    assert len(quoted) > 40
    recorded = recorded_values()
    assert [q for q in quoted if q not in recorded] == []


def test_readme_row_for_notebook_10_quotes_only_recorded_numbers():
    quoted = quoted_pairs(readme_row())
    assert len(quoted) > 5
    recorded = recorded_values()
    assert [q for q in quoted if q not in recorded] == []


# ---------------------------------------------------------------------------------------------
# Notebook 05, §5: the cost of the block in the small CNN (benchmarks/results/course-05-cost.json)

NOTEBOOK_05 = ROOT / "notebooks" / "05_self_attention_for_images.ipynb"
RATIO = re.compile(r"×(\d+\.\d+)")  # "×2.08"; not "16×16" (no decimals) and not "×21" (old text)


def markdown(notebook: Path) -> str:
    """The notebook's Markdown, with every run of spaces and line breaks made one space."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return " ".join(" ".join("".join(c["source"]).split())
                    for c in cells if c["cell_type"] == "markdown")  # fmt: skip


def cost_numbers(record: dict) -> dict[str, str]:
    """What the record supports, written as notebook 05 writes it: name -> text."""
    raw = record["raw"]
    numbers = {"rounds": f"{raw['timing_rounds']} rounds", "steps": f"{raw['timing_steps']} steps"}
    for clock, times in raw["seconds_per_step_per_round"].items():
        ratios = [t1 / t0 for t0, t1 in zip(times["without"], times["with"], strict=True)]
        q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        for name, value in (("median", median), ("q1", q1), ("q3", q3),
                            ("min", min(ratios)), ("max", max(ratios))):  # fmt: skip
            numbers[f"{clock} ratio {name}"] = f"×{value:.2f}"
        for model, seconds in times.items():
            numbers[f"{clock} ms {model}"] = f"{1e3 * statistics.median(seconds):.1f}"
            numbers[f"{clock} ms {model} min"] = f"{1e3 * min(seconds):.1f}"
            numbers[f"{clock} ms {model} max"] = f"{1e3 * max(seconds):.1f}"
    madds = raw["forward_multiply_adds_per_image"]
    numbers["theory ratio"] = f"×{madds['with'] / madds['without']:.2f}"
    saved = raw["saved_for_backward_bytes"]
    extra = saved["with"] - saved["without"]
    block_map = raw["batch"] * 32 * 16 * 16 * 4  # bytes of one (B, 32, 16, 16) float32 map
    numbers.update({
        "MiB without": f"{saved['without'] / 2**20:.1f} MiB",
        "MiB with": f"{saved['with'] / 2**20:.1f} MiB",
        "MiB extra": f"+{extra / 2**20:.1f} MiB",
        "maps": f"{extra / block_map:.1f} maps",
    })  # fmt: skip
    return numbers


def test_the_cost_record_is_a_full_settings_run_of_both_clocks():
    record = json.loads((RESULTS / "course-05-cost.json").read_text(encoding="utf-8"))
    assert record["meta"]["fast_mode"] is False
    raw = record["raw"]
    assert set(raw["seconds_per_step_per_round"]) == {"wall-clock", "CPU"}
    for times in raw["seconds_per_step_per_round"].values():
        assert len(times["without"]) == len(times["with"]) == raw["timing_rounds"] >= 10
    # The block on a 32-channel 16×16 map, keys pooled to 8×8, adds 1.25·C² multiply-adds per
    # position (its 1×1 convolutions) and N·M·(C/8 + C/2) (its two products), per image.
    madds = raw["forward_multiply_adds_per_image"]
    assert madds["with"] - madds["without"] == 1.25 * 32**2 * 256 + 256 * 64 * (4 + 16)


def test_notebook_05_quotes_the_cost_record():
    record = json.loads((RESULTS / "course-05-cost.json").read_text(encoding="utf-8"))
    numbers = cost_numbers(record)
    prose = markdown(NOTEBOOK_05)
    quoted = [
        "rounds", "steps", "theory ratio", "MiB without", "MiB with", "MiB extra", "maps",
        *(f"{clock} ratio {name}" for clock in ("CPU", "wall-clock")
          for name in ("median", "q1", "q3", "min", "max")),
        *(f"{clock} ms {model}" for clock in ("CPU", "wall-clock")
          for model in ("without", "with")),
        "CPU ms with min", "CPU ms with max",
    ]  # fmt: skip
    assert [f"{name}: {numbers[name]}" for name in quoted if numbers[name] not in prose] == []
    # and no ratio in the prose that the record does not support (say, one left from an old run)
    supported = {n.removeprefix("×") for n in numbers.values() if n.startswith("×")}
    assert sorted(set(RATIO.findall(prose)) - supported) == []


def test_the_cost_check_rejects_a_changed_round():
    record = json.loads((RESULTS / "course-05-cost.json").read_text(encoding="utf-8"))
    before = cost_numbers(record)
    cpu = record["raw"]["seconds_per_step_per_round"]["CPU"]
    cpu["with"] = [2 * t for t in cpu["with"]]  # the block twice as slow in every round
    after = cost_numbers(record)
    assert after["CPU ratio median"] != before["CPU ratio median"]
    assert after["CPU ratio median"] not in markdown(NOTEBOOK_05)
