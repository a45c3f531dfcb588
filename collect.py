"""Reward-free dataset collection: python collect.py env=walker policy=random frames=100000 out=<dir>"""

import os

import hydra

from urlb.run.resolvers import register_resolvers


@hydra.main(config_path="configs", config_name="collect", version_base=None)
def main(cfg):
    from urlb.run.collect import collect_from_config  # heavy imports after the config is known to be valid

    collect_from_config(cfg)


if __name__ == "__main__":
    # Headless by default: dm_control and MuJoCo pick their OpenGL backend from this.
    if "MUJOCO_GL" not in os.environ and "DISPLAY" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    register_resolvers()
    main()
