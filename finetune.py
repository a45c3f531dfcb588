"""Finetuning: python finetune.py agent=ddpg task=walker_stand snapshot=2M"""

import os

import hydra

from urlb.run.resolvers import register_resolvers


@hydra.main(config_path="configs", config_name="finetune", version_base=None)
def main(cfg):
    from urlb.run.finetune import main as finetune  # heavy imports after the config is known to be valid

    finetune(cfg)


if __name__ == "__main__":
    # Headless by default: dm_control and MuJoCo pick their OpenGL backend from this.
    if "MUJOCO_GL" not in os.environ and "DISPLAY" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    register_resolvers()
    main()
