"""Atari Pong: the Atari recipe (``recipes/atari.py``) with Pong as its game, as the defaults were measured.

The default agent is the paper's recurrent one (one frame per observation, an LSTM after the Nature
CNN) trained with APPO's clipped surrogate on V-trace advantages (docs/benchmarks/pong.md).

python recipes/pong.py fit                      # train on the defaults (recipes/atari.py, PONG)
python recipes/pong.py fit --ckpt_path last     # resume
python recipes/pong.py test --ckpt_path last    # play evaluation games
python recipes/pong.py fit --config recipes/configs/pong_feedforward.yaml  # the earlier default: 4 frames, no core
"""

import atari  # recipes/ is this script's folder


def main() -> None:
    atari.main(atari.PONG, experiment="pong")


if __name__ == "__main__":  # required: TorchRL starts its actor processes with spawn
    from impala_lit.app.process import run_and_exit

    run_and_exit(main)
