"""Zero-shot evaluation of a dataset agent's snapshot: python zero_shot.py snapshot=<snapshot_<updates>.pt>"""

import os

import hydra

from urlb.run.resolvers import register_resolvers


@hydra.main(config_path="configs", config_name="zero_shot", version_base=None)
def main(cfg):
    from urlb.run.zero_shot import (
        zero_shot_from_config,
    )  # heavy imports after the config is known to be valid

    zero_shot_from_config(cfg)


if __name__ == "__main__":
    # Headless by default: dm_control and MuJoCo pick their OpenGL backend from this.
    if "MUJOCO_GL" not in os.environ and "DISPLAY" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    register_resolvers()
    main()
