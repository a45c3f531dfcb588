"""Pixel datasets from state datasets: python render_dataset.py dataset=<dir> out=<dir> size=64"""

import os

import hydra

from urlb.run.resolvers import register_resolvers


@hydra.main(config_path="configs", config_name="render_dataset", version_base=None)
def main(cfg):
    from urlb.run.render_dataset import render_from_config  # heavy imports after the config is valid

    render_from_config(cfg)


if __name__ == "__main__":
    # Headless by default: dm_control and MuJoCo pick their OpenGL backend from this.
    if "MUJOCO_GL" not in os.environ and "DISPLAY" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    register_resolvers()
    main()
