"""Reward-free pretraining: python pretrain.py agent=ddpg env=walker [preset=small]"""

import os

import hydra

from urlb.run.resolvers import register_resolvers


@hydra.main(config_path="configs", config_name="pretrain", version_base=None)
def main(cfg):
    from urlb.run.pretrain import main as pretrain  # heavy imports after the config is known to be valid

    pretrain(cfg)


if __name__ == "__main__":
    # Headless by default: dm_control and MuJoCo pick their OpenGL backend from this.
    if "MUJOCO_GL" not in os.environ and "DISPLAY" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    register_resolvers()
    main()
