"""identify's default selection (z = 10%, no filter) and the method's fixed values as ``preset="paper"``."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import IdentifyConfig, identify, rescore
from tl_neuronllm.config.identify import PRESETS


@pytest.fixture(scope="module")
def model():
    return make_model("native", False)


def test_paper_preset_is_the_methods_values_and_options_override_it():
    paper = IdentifyConfig.from_options(preset="paper")
    assert (paper.z, paper.ambiguity, paper.steps, paper.ig_rule) == (0.01, 0.0, 16, "riemann")
    default = IdentifyConfig.from_options()
    assert (default.z, default.ambiguity) == (0.1, None)
    assert IdentifyConfig.from_options(preset="default") == default
    # an explicit option wins over the preset's value; the preset's other values stay
    mixed = IdentifyConfig.from_options(preset="paper", steps=4)
    assert (mixed.steps, mixed.z, mixed.ambiguity, mixed.ig_rule) == (4, 0.01, 0.0, "riemann")
    # every preset value is a field (a renamed field would otherwise go unnoticed)
    for name, values in PRESETS.items():
        assert set(values) <= set(IdentifyConfig().to_dict()), name


def test_bad_presets_are_refused_before_model_time(model):
    task, fmt = token_task(4)
    with pytest.raises(ValueError, match=r"preset must be one of \('default', 'paper'\), got 'papers'"):
        identify(model, task, k=3, token_format=fmt, preset="papers", progress=False)
    with pytest.raises(ValueError, match="either config= or preset="):
        identify(model, task, k=3, token_format=fmt, preset="paper", config=IdentifyConfig(), progress=False)


def test_default_and_paper_sets_are_rescores_of_the_same_attributions(model):
    """The two presets differ only in the selection knobs (same steps here): each one's sets are exactly
    the other's attributions re-formed with its values, and they differ on this model."""
    task, fmt = token_task(10)
    kw = dict(k=6, token_format=fmt, steps=2, progress=False, keep_attributions=True)
    default = identify(model, task, **kw)
    paper = identify(model, task, preset="paper", ig_rule="gauss", **kw)
    assert default.attributions is not None and paper.attributions is not None
    assert torch.equal(default.attributions, paper.attributions)
    as_paper = rescore(default, z=0.01, ambiguity=0.0)
    assert torch.equal(as_paper.scores, paper.scores)
    assert as_paper.good == paper.good and as_paper.bad == paper.bad
    as_default = rescore(paper, z=0.1, ambiguity=None)
    assert torch.equal(as_default.scores, default.scores)
    assert as_default.good == default.good
    assert paper.config["z"] == 0.01 and paper.config["ambiguity"] == 0.0
    assert default.config["z"] == 0.1 and default.config["ambiguity"] is None
    # the default pool is wider: more neurons get a nonzero score
    assert int((default.scores != 0).sum()) > int((paper.scores != 0).sum())


def test_select_cv_grid_spans_the_paper_values_and_the_default():
    from tl_neuronllm.studies.selection import DEFAULT_GRID

    d, p = IdentifyConfig(), IdentifyConfig.from_options(preset="paper")
    assert DEFAULT_GRID[0] == {"z": p.z, "ambiguity": p.ambiguity}  # ties go to the method's own setting
    assert DEFAULT_GRID[-1] == {"z": d.z, "ambiguity": d.ambiguity}
