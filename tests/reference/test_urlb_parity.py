"""Parity with the URLB family's own code (issue 17): every pretraining update of our agents
equals the reference's on recorded batches.

The fixtures (``tests/reference/data``, written by ``scripts/reference/record_urlb.py`` from
rll-research/url_benchmark and rll-research/cic) hold the reference agent's initial weights,
a few batches, the randomness it drew inside each update, and after each update its
metrics, the reward its critic trained on, every weight and the reward's running state. We
load the weights into our agent (``urlb_reference.PORTS`` maps the names), feed the same
batches, and the same randomness through the agent's ``randomness`` hook, and compare
everything to ``rtol=1e-5, atol=1e-6``.

Every agent matches at its defaults (URLB's behaviour). Where a config option departs from
URLB on purpose, a second test shows that switching it on is what moves the update off the
reference. The ``*_finetune`` fixtures record URLB's transfer (``init_from``) and the
extrinsic-reward updates after it (DDPG; APS's successor-feature critic). Max relative
differences are in docs/fidelity.md (``python tests/reference/urlb_reference.py`` prints
them).
"""

from __future__ import annotations

import json

import pytest
from urlb_reference import DATA, PORTS, RTOL, Fixture, build, replay

# Options whose non-default value departs from URLB inside a pretraining update: the
# agent's fixture, and the reward-model arguments that switch the departure on.
DEPARTURES = {
    "knn cdist (icm_apt)": ("icm_apt", {"knn_distance": "cdist"}),
    "knn cdist (proto)": ("proto", {"knn_distance": "cdist"}),
    "knn cdist (aps)": ("aps", {"knn_distance": "cdist"}),
    "knn cdist (cic)": ("cic", {"knn_distance": "cdist"}),
    "rnd running statistics": ("rnd", {"obs_normalisation": "running"}),
    "smm post-step reward": ("smm", {"reward_timing": "post_step"}),
}


@pytest.mark.parametrize("name", sorted(PORTS))
def test_update_equals_reference(name):
    replay(Fixture.load(name)).assert_close()


def post_step_draws(fixture: Fixture, update: int):
    """SMM's ``post_step`` reward draws VAE noise a second time: it gets the update's
    recorded noise again, so only the timing differs from URLB."""
    vae, critic_noise, actor_noise = fixture.draws(update)
    return [vae, vae, critic_noise, actor_noise]


@pytest.mark.parametrize("departure", sorted(DEPARTURES))
def test_each_departure_option_moves_the_update_off_the_reference(departure):
    name, options = DEPARTURES[departure]
    fixture = Fixture.load(name)
    draws = post_step_draws if options.get("reward_timing") == "post_step" else None
    comparison = replay(fixture, build(fixture, **options), draws=draws)
    assert comparison.failures() and comparison.max_relative() > 10 * RTOL


def test_transfer_keeps_urlbs_fresh_target_critic_unless_asked():
    """``ddpg_finetune`` holds URLB's init_from: the critic trunk goes into the critic only.
    ``init_critic_target=true`` (ours before issue 17) copies it into the target as well."""
    fixture = Fixture.load("ddpg_finetune")
    agent = build(fixture)
    agent.init_critic_target = True
    failures = [label for label, _ in replay(fixture, agent).failures()]
    assert any(label.startswith("transferred/critic_target.trunk") for label in failures)


def test_aps_transfers_urlbs_fresh_phi_unless_asked():
    """``aps_finetune`` holds URLB's init_from, which leaves APS's phi fresh (compared at the
    default); ``transfer_phi=true`` carries the pretrained phi over instead."""
    fixture = Fixture.load("aps_finetune")
    failures = [label for label, _ in replay(fixture, build(fixture, transfer_phi=True)).failures()]
    assert any(label.startswith("transferred/reward_model.features") for label in failures)


def test_fixtures_are_documented_and_small():
    """Every port has a fixture of at least three updates whose manifest names the
    reference; the URLB family's fixtures (the folder's top level; other families keep
    theirs in subfolders) stay under 5 MB together."""
    assert set(PORTS) <= {p.stem for p in DATA.glob("*.npz")}
    assert sum(p.stat().st_size for p in DATA.glob("*.npz")) < 5e6
    for name in PORTS:
        manifest = json.loads((DATA / f"{name}.json").read_text())
        assert manifest["repository"].startswith("https://github.com/rll-research/")
        assert len(manifest["commit"]) == 40 and manifest["command"]
        assert len(manifest["updates"]) >= 3
